"""Addresses in the tracker's answers that a peer can dial.

An origin in the tracker's own daemon that listens on every address (``0.0.0.0`` or ``::``, as
in the container image) is known to the tracker by that address, which means "this host" only on
this host. A peer reached this host at its connection's local address, so the frames it gets
carry that one instead: its origin seeders and its relay URLs.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

from swarmreg.tracker.wire import MetainfoReply, Peer, Relay

Frame = TypeVar("Frame")


def unspecified(host: str) -> bool:
    """``0.0.0.0``, ``::`` or the empty host: an address to listen on, not to dial."""
    try:
        return host == "" or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def reachable(frame: Frame, local_host: str) -> Frame:
    """``frame`` with each unspecified host in its peers or relay URL replaced by ``local_host``."""
    if not local_host or unspecified(local_host):
        return frame
    peers: tuple[Peer, ...] | None = getattr(frame, "peers", None)
    if peers and any(unspecified(peer.host) for peer in peers):
        return attrs.evolve(frame, peers=tuple(  # type: ignore[misc]
            attrs.evolve(peer, host=local_host) if unspecified(peer.host) else peer for peer in peers))
    if isinstance(frame, MetainfoReply) and frame.relay is not None:
        url = _reachable_url(frame.relay.url, local_host)
        if url != frame.relay.url:
            return attrs.evolve(frame, relay=Relay(url, frame.relay.size))
    return frame


def _reachable_url(url: str, local_host: str) -> str:
    parts = urlsplit(url)
    if parts.hostname is None or not unspecified(parts.hostname):
        return url
    host = f"[{local_host}]" if ":" in local_host else local_host
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))
