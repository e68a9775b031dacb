"""The tracker's peer store: which peers take part in which torrent, and until when."""

from __future__ import annotations

import random
from collections.abc import Hashable

import attrs
import trio

from swarmreg.tracker.messages import Peer


@attrs.define
class _Entry:
    peer: Peer
    owner: Hashable | None  # the connection that announced it, or ("origin", address)
    expires: float


class PeerStore:
    """Peers per info-hash. Announced peers expire after ``ttl`` unless they announce
    again, and go at once when their connection closes; origins stay.

    Times are trio's clock (``trio.current_time()``), the clock the tracker's expiry loop
    sleeps on, unless a method is given ``now``.
    """

    def __init__(self, ttl: float, max_peers: int, rng: random.Random | None = None) -> None:
        """Origins never expire: announce them with owner ("origin", address)."""
        self.ttl = ttl
        self.max_peers = max_peers
        self._rng = rng or random.Random()
        self._torrents: dict[str, dict[str, _Entry]] = {}
        self._owned: dict[Hashable, set[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return sum(len(peers) for peers in self._torrents.values())

    def announce(self, info_hash: str, peer: Peer, owner: Hashable | None,
                 now: float | None = None) -> tuple[list[Peer], bool]:
        """Record ``peer``; returns the peers to hand it, and whether others should hear of it.

        Others hear of a peer that is new to the torrent or has just completed.
        """
        now = trio.current_time() if now is None else now
        previous = self._torrents.get(info_hash, {}).get(peer.peer_id)
        ttl = float("inf") if peer.origin else self.ttl  # origins stay until replaced
        if owner is not None:
            owned = self._owned.setdefault(owner, set())
            # One peer per owner and torrent: a restarted origin replaces its old entry.
            for stale in [k for k in owned if k[0] == info_hash and k[1] != peer.peer_id]:
                self._remove(*stale)
            owned.add((info_hash, peer.peer_id))
        self._torrents.setdefault(info_hash, {})[peer.peer_id] = _Entry(peer, owner, now + ttl)
        news = previous is None or previous.peer != peer
        return self.peers_for(info_hash, exclude=peer.peer_id, now=now), news

    def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]:
        """Up to ``max_peers`` live peers: origins and complete peers first, random within each class."""
        now = trio.current_time() if now is None else now
        live = [e.peer for e in self._torrents.get(info_hash, {}).values()
                if e.expires > now and e.peer.peer_id != exclude]
        seeds = [p for p in live if p.origin or p.complete]
        others = [p for p in live if not (p.origin or p.complete)]
        self._rng.shuffle(seeds)
        self._rng.shuffle(others)
        return (seeds + others)[:self.max_peers]

    def leave(self, info_hash: str, peer_id: str) -> None:
        self._remove(info_hash, peer_id)

    def _remove(self, info_hash: str, peer_id: str) -> None:
        peers = self._torrents.get(info_hash, {})
        entry = peers.pop(peer_id, None)
        if entry is not None and entry.owner is not None:
            self._owned.get(entry.owner, set()).discard((info_hash, peer_id))
        if not peers:
            self._torrents.pop(info_hash, None)

    def drop_owner(self, owner: Hashable) -> int:
        """Forget every peer a closed connection announced; returns how many."""
        owned = self._owned.pop(owner, set())
        for info_hash, peer_id in owned:
            entry = self._torrents.get(info_hash, {}).get(peer_id)
            if entry is not None and entry.owner == owner:
                self._remove(info_hash, peer_id)
        return len(owned)

    def expire(self, now: float | None = None) -> int:
        """Forget peers whose announce is older than the TTL; returns how many."""
        now = trio.current_time() if now is None else now
        stale = [(info_hash, peer_id) for info_hash, peers in self._torrents.items()
                 for peer_id, entry in peers.items() if entry.expires <= now]
        for info_hash, peer_id in stale:
            self._remove(info_hash, peer_id)
        return len(stale)
