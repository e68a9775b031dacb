"""The tracker's peer store: which peers take part in which torrent, and until when."""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Collection, Hashable, Iterable, Mapping

import attrs
import trio

from swarmreg.errors import PEER_ID_TAKEN, SwarmregError
from swarmreg.tracker.wire import Peer


@attrs.define
class Entry:
    peer: Peer
    owner: Hashable | None  # the connection that announced it, or ("origin", address)
    expires: float
    progress: int = 0  # pieces held, as last announced
    since: float = 0.0  # when the progress last grew (or the peer first announced)
    rescues: int = 0  # rescues since then


class Candidates:
    """Peer ids that can be drawn at random in O(drawn), not O(held): a list and each id's place."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, peer_id: str) -> None:
        if peer_id not in self._at:
            self._at[peer_id] = len(self._ids)
            self._ids.append(peer_id)

    def discard(self, peer_id: str) -> None:
        at = self._at.pop(peer_id, None)
        if at is None:
            return
        last = self._ids.pop()
        if last != peer_id:  # the last one takes the freed place
            self._ids[at] = last
            self._at[last] = at

    def draw(self, count: int, rng: random.Random) -> list[str]:
        """Up to ``count`` ids, in random order."""
        return rng.sample(self._ids, min(count, len(self._ids)))


@attrs.frozen
class Rescue:
    """What a stalled download gets: every peer, furthest along first, and the owners of the
    ones further along than it, who are told of it so that they dial it."""

    peers: list[Peer]
    helpers: list[Hashable]
    first: bool  # the first rescue of this stall


def pick_peers(entries: Iterable[Entry], exclude: str, now: float, max_peers: int,
               rng: random.Random) -> list[Peer]:
    """Up to ``max_peers`` live peers but ``exclude``: origins and complete peers first, random within each class."""
    live = [e.peer for e in entries if e.expires > now and e.peer.peer_id != exclude]
    seeds = [p for p in live if p.origin or p.complete]
    others = [p for p in live if not (p.origin or p.complete)]
    rng.shuffle(seeds)
    rng.shuffle(others)
    return (seeds + others)[:max_peers]


def rescue_from(entries: Mapping[str, Entry], peer_id: str, helpers: int, now: float, max_peers: int,
                stall_after: float) -> Rescue | None:
    """PeerStore.rescue over one torrent's ``entries``; counts the rescue in the stalled peer's entry."""
    me = entries.get(peer_id)
    if me is None or me.peer.complete or me.peer.origin or now - me.since < stall_after:
        return None
    live = [e for e in entries.values() if e.expires > now and e.peer.peer_id != peer_id]
    # Origins, complete peers, then by progress: the first n without sorting them all.
    furthest = functools.partial(
        heapq.nsmallest, key=lambda e: (not e.peer.origin, not e.peer.complete, -e.progress))
    further = [e for e in live if not e.peer.origin and e.owner is not None
               and (e.peer.complete or e.progress > me.progress)]
    me.rescues += 1
    return Rescue([e.peer for e in furthest(max_peers, live)],
                  [e.owner for e in furthest(helpers, further)], me.rescues == 1)


class PeerStore:
    """Peers per info-hash. Announced peers expire after ``ttl`` unless they announce
    again, and go at once when their connection closes; origins stay until ``forget``
    (the tracker forgets them with the torrent's metainfo).

    A peer id belongs to whoever announced it first, in every torrent: a connection (one
    peer id per connection, held until ``drop_owner``) or an origin (for as long as one
    of its entries has that id). Nobody else may announce it (PEER_ID_TAKEN), so no
    connection can replace, or by leaving take away, another peer's entry.
    """

    def __init__(self, ttl: float, max_peers: int, rng: random.Random | None = None,
                 stall_after: float = 4.0) -> None:
        """Origins never expire: announce them with owner ("origin", address). A download whose
        progress has not grown for ``stall_after`` seconds of announces is stalled (``rescue``)."""
        self.ttl = ttl
        self.max_peers = max_peers
        self.stall_after = stall_after
        self._rng = rng or random.Random()
        self._torrents: dict[str, dict[str, Entry]] = {}
        self._owned: dict[Hashable, dict[str, str]] = {}  # owner -> info-hash -> its peer id there
        self._claims: dict[str, Hashable] = {}  # peer id -> the connection it belongs to
        self._ids: dict[Hashable, str] = {}  # connection -> its peer id (the inverse)
        self._origin_ids: dict[str, int] = {}  # peer id -> how many origin entries have it
        # info-hash -> (origins and complete peers, the others): what peers_for draws from.
        self._classes: dict[str, tuple[Candidates, Candidates]] = {}

    def __len__(self) -> int:
        return sum(len(peers) for peers in self._torrents.values())

    def announce(self, info_hash: str, peer: Peer, owner: Hashable | None,
                 now: float | None = None, progress: int = 0) -> tuple[list[Peer], bool]:
        """Record ``peer`` (holding ``progress`` pieces); returns the peers to hand it, and
        whether others should hear of it.

        Others hear of a peer that is new to the torrent or has just completed. A peer that is
        not an origin gets PEER_ID_TAKEN, and nothing changes, when its id is an origin's or
        another owner's, or when its owner announced another id before.
        """
        now = trio.current_time() if now is None else now
        if peer.origin:
            self._evict(peer.peer_id)
        else:
            self._claim(peer.peer_id, owner)
        previous = self._torrents.get(info_hash, {}).get(peer.peer_id)
        ttl = float("inf") if peer.origin else self.ttl  # origins stay until replaced
        if owner is not None:
            # One peer per owner and torrent: a restarted origin replaces its old entry.
            if (stale := self._owned.get(owner, {}).get(info_hash)) not in (None, peer.peer_id):
                self._remove(info_hash, stale, owner)
        if previous is not None:  # this owner's own, or (for an origin) whoever had the id here
            self._remove(info_hash, peer.peer_id, previous.owner)
        grew = previous is None or progress > previous.progress or peer.complete
        since, rescues = (now, 0) if grew or previous is None else (previous.since, previous.rescues)
        self._torrents.setdefault(info_hash, {})[peer.peer_id] = Entry(
            peer, owner, now + ttl, progress, since, rescues)
        seeds, others = self._classes.setdefault(info_hash, (Candidates(), Candidates()))
        (seeds if peer.origin or peer.complete else others).add(peer.peer_id)
        if owner is not None:
            self._owned.setdefault(owner, {})[info_hash] = peer.peer_id
        if peer.origin:
            self._origin_ids[peer.peer_id] = self._origin_ids.get(peer.peer_id, 0) + 1
        news = previous is None or previous.peer != peer
        return self.peers_for(info_hash, exclude=peer.peer_id, now=now), news

    def rescue(self, info_hash: str, peer_id: str, helpers: int, now: float | None = None) -> Rescue | None:
        """For a download whose announced progress has not grown for ``stall_after`` seconds: up
        to ``max_peers`` live peers, origins and complete ones first, then by progress, and the
        owners of up to ``helpers`` agents further along. None for a download that progresses.

        libtorrent writes off a peer after a few failed dials (peers dialled through full links
        at a swarm's start); the stalled agent re-offers what it gets, and the helpers dial it.
        """
        now = trio.current_time() if now is None else now
        return rescue_from(self._torrents.get(info_hash, {}), peer_id, helpers, now, self.max_peers,
                           self.stall_after)

    def is_origin(self, info_hash: str, peer: Peer) -> bool:
        """Whether ``peer`` is, at its address, an origin of the torrent: an agent in its origin's daemon.

        Agent and origin roles in one daemon share one peer wire and so one peer id; the agent's
        announces of the origin's torrents say nothing the origin's entry does not say already.
        """
        entry = self._torrents.get(info_hash, {}).get(peer.peer_id)
        return (entry is not None and entry.peer.origin
                and (entry.peer.host, entry.peer.port) == (peer.host, peer.port))

    def holder(self, peer_id: str) -> Hashable | None:
        """The connection ``peer_id`` belongs to, if a connection (not an origin) holds it."""
        return self._claims.get(peer_id)

    def _claim(self, peer_id: str, owner: Hashable | None) -> None:
        """Make ``peer_id`` ``owner``'s, or raise PEER_ID_TAKEN if it is someone else's."""
        if self._origin_ids.get(peer_id):
            raise SwarmregError(PEER_ID_TAKEN, f"peer id {peer_id} is an origin's")
        holder = self._claims.get(peer_id)
        if holder is not None and holder != owner:
            raise SwarmregError(PEER_ID_TAKEN, f"peer id {peer_id} belongs to another connection")
        if owner is None:
            return
        mine = self._ids.setdefault(owner, peer_id)
        if mine != peer_id:
            raise SwarmregError(PEER_ID_TAKEN, f"this connection announced peer id {mine}: it cannot be another peer")
        self._claims[peer_id] = owner

    def _evict(self, peer_id: str) -> None:
        """An origin announces ``peer_id``: a connection that claimed it loses its entries."""
        holder = self._claims.pop(peer_id, None)
        if holder is not None:
            for info_hash, owned_id in list(self._owned.get(holder, {}).items()):
                if owned_id == peer_id:
                    self._remove(info_hash, peer_id, holder)

    def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]:
        """Up to ``max_peers`` live peers: origins and complete peers first, random within each class.

        Every announce asks for them, so the cost is in the peers handed out, not in the torrent's
        size: they are drawn from each class, and only when a drawn one has outlived its TTL
        (``expire`` has not yet run) is the whole torrent looked at."""
        now = trio.current_time() if now is None else now
        entries = self._torrents.get(info_hash)
        if not entries:
            return []
        chosen: list[Peer] = []
        for candidates in self._classes[info_hash]:
            wanted = self.max_peers - len(chosen)
            if wanted <= 0:
                break
            for peer_id in candidates.draw(wanted + 1, self._rng):  # one more, in case it is ``exclude``
                entry = entries[peer_id]
                if entry.expires <= now:
                    return pick_peers(entries.values(), exclude, now, self.max_peers, self._rng)
                if peer_id != exclude and len(chosen) < self.max_peers:
                    chosen.append(entry.peer)
        return chosen

    def leave(self, info_hash: str, owner: Hashable) -> None:
        """``owner`` no longer takes part in the torrent; it keeps its peer id."""
        if (peer_id := self._owned.get(owner, {}).get(info_hash)) is not None:
            self._remove(info_hash, peer_id, owner)

    def _remove(self, info_hash: str, peer_id: str, owner: Hashable | None) -> None:
        """Forget the torrent's entry for ``peer_id`` if ``owner``'s."""
        peers = self._torrents.get(info_hash, {})
        entry = peers.get(peer_id)
        if entry is None or entry.owner != owner:
            return
        del peers[peer_id]
        for candidates in self._classes[info_hash]:
            candidates.discard(peer_id)
        if entry.owner is not None and self._owned.get(entry.owner, {}).get(info_hash) == peer_id:
            del self._owned[entry.owner][info_hash]
        if entry.peer.origin:
            self._origin_ids[peer_id] -= 1
            if not self._origin_ids[peer_id]:
                del self._origin_ids[peer_id]
        if not peers:
            self._torrents.pop(info_hash, None)
            self._classes.pop(info_hash, None)

    def forget(self, info_hash: str, owners: Collection[Hashable]) -> int:
        """Forget the torrent's entries of ``owners`` (the origins the tracker fetched its metainfo
        from, once that metainfo has left its cache: the next fetch records the origin that
        answers again); returns how many."""
        gone = [(peer_id, entry.owner) for peer_id, entry in self._torrents.get(info_hash, {}).items()
                if entry.owner in owners]
        for peer_id, owner in gone:
            self._remove(info_hash, peer_id, owner)
        return len(gone)

    def drop_owner(self, owner: Hashable) -> int:
        """Forget every peer a closed connection announced, and free its peer id; returns how many."""
        owned = self._owned.pop(owner, {})
        for info_hash, peer_id in owned.items():
            self._remove(info_hash, peer_id, owner)
        if (claimed := self._ids.pop(owner, None)) is not None and self._claims.get(claimed) == owner:
            del self._claims[claimed]
        return len(owned)

    def expire(self, now: float | None = None) -> int:
        """Forget peers whose announce is older than the TTL; returns how many."""
        return len(self.expire_entries(now))

    def expire_entries(self, now: float | None = None) -> list[tuple[str, Hashable | None]]:
        """Forget peers whose announce is older than the TTL; returns each one's torrent and owner."""
        now = trio.current_time() if now is None else now
        stale = [(info_hash, peer_id, entry.owner) for info_hash, peers in self._torrents.items()
                 for peer_id, entry in peers.items() if entry.expires <= now]
        for info_hash, peer_id, owner in stale:
            self._remove(info_hash, peer_id, owner)
        return [(info_hash, owner) for info_hash, _, owner in stale]
