"""SSL contexts for the cluster's channels, built once per daemon from ``[tls]``."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs

from swarmreg.config import ConfigError, EdgeTlsConfig, TlsConfig
from swarmreg.tls.certs import FFDHE2048


@attrs.frozen
class PeerTls:
    """The peer wire's TLS: blobs are SSL torrents rooted at the cluster CA, and this daemon
    proves its membership with its peer certificate (PEM texts, as libtorrent takes them)."""

    root_cert: bytes
    cert: str
    key: str
    dh_params: str = FFDHE2048


@attrs.frozen
class ServerTls:
    """What an HTTPS port serves with: its certificate, and the CA its clients must present a
    certificate from (``ca`` empty: no client certificate asked for)."""

    cert: str
    key: str
    ca: str = ""

    @classmethod
    def cluster(cls, tls: TlsConfig) -> ServerTls | None:
        """A port between nodes: mutual TLS under the cluster CA."""
        return cls(tls.cert, tls.key, tls.ca) if tls.enabled else None

    @classmethod
    def edge(cls, tls: EdgeTlsConfig) -> ServerTls | None:
        """A registry port: one-way TLS, or mutual with ``client_auth = "verify"``."""
        if not tls.enabled:
            return None
        return cls(tls.cert, tls.key, tls.ca if tls.client_auth == "verify" else "")


@attrs.frozen
class ClusterTls:
    """How this daemon talks to the cluster: plain, or mutual TLS under the cluster CA.

    ``server`` requires a client certificate from the CA; ``client`` presents this node's
    certificate and verifies the server's against the CA and the address dialled.
    """

    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    # Set when [tls] names a peer certificate: the swarm engine runs SSL torrents.
    peer: PeerTls | None = None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    @property
    def http(self) -> str:
        """The URL scheme of the cluster's HTTP APIs."""
        return "https" if self.enabled else "http"

    @property
    def ws(self) -> str:
        """The URL scheme of the tracker's websocket."""
        return "wss" if self.enabled else "ws"

    @classmethod
    def from_config(cls, tls: TlsConfig) -> ClusterTls:
        """The contexts for ``tls``; a missing or unreadable file is a ConfigError naming the key."""
        if not tls.enabled:
            return cls()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            _load(context.load_verify_locations, "tls.ca", tls.ca)
            _load(partial(context.load_cert_chain, keyfile=tls.key), "tls.cert/tls.key", tls.cert)
        server.verify_mode = ssl.CERT_REQUIRED
        peer = None
        if tls.peer_cert:
            peer = PeerTls(_read("tls.ca", tls.ca), _read("tls.peer_cert", tls.peer_cert).decode(),
                           _read("tls.peer_key", tls.peer_key).decode())
        return cls(server, client, peer)


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot load {path!r}: {error}") from error


def _load(load: Callable[[str], object], key: str, path: str) -> None:
    try:
        load(path)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"{key}: cannot load {path!r}: {error}") from error
