"""The tracker's peer store as the service uses it: one interface, kept in memory or in Redis.

Owners are strings: a connection's ``owner_id`` (``c:<tracker>:<n>``, whose tracker part says
which tracker holds the connection) or an origin's (``origin:<address>``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol, runtime_checkable

import trio

from swarmreg.config import TrackerConfig
from swarmreg.tracker.peers import PeerStore, Rescue
from swarmreg.tracker.wire import Peer


def connection_owner(tracker_id: str, n: int) -> str:
    """The owner id of a tracker's ``n``-th connection."""
    return f"c:{tracker_id}:{n}"


def owner_tracker(owner: str) -> str | None:
    """The tracker that holds a connection owner, None for an origin's."""
    kind, _, rest = owner.partition(":")
    return rest.partition(":")[0] if kind == "c" else None


class Store(Protocol):
    """What the tracker keeps per torrent; PeerStore documents the semantics of each method.
    A store that fails raises SwarmregError (UNAVAILABLE).

    ``now`` is a time on the store's own clock (trio's for memory, the wall clock for Redis,
    which trackers on several hosts share); tests pass it, the tracker does not.
    """

    async def announce(self, info_hash: str, peer: Peer, owner: str | None, now: float | None = None,
                       progress: int = 0) -> tuple[list[Peer], bool]: ...

    async def rescue(self, info_hash: str, peer_id: str, helpers: int, now: float | None = None) -> Rescue | None: ...

    async def is_origin(self, info_hash: str, peer: Peer) -> bool: ...

    async def holder(self, peer_id: str) -> str | None: ...

    async def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]: ...

    async def leave(self, info_hash: str, owner: str) -> None: ...

    async def forget(self, info_hash: str, owners: Collection[str]) -> int: ...

    async def drop_owner(self, owner: str) -> int: ...

    async def expire_entries(self, now: float | None = None) -> list[tuple[str, str | None]]: ...

    async def count(self) -> int: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SharedStore(Store, Protocol):
    """A store several trackers share: they tell each other they run, and publish events (pushes)."""

    async def heartbeat(self, tracker_id: str, ttl: float) -> None: ...

    async def retire(self, tracker_id: str) -> None: ...

    async def beat(self, tracker_id: str) -> str | None: ...

    async def publish(self, event: dict[str, Any]) -> None: ...

    async def listen(self, deliver: Callable[[dict[str, Any]], None], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


class MemoryStore:
    """The in-memory PeerStore behind the Store interface: one tracker's own peers."""

    def __init__(self, peers: PeerStore) -> None:
        self.peers = peers

    async def announce(self, info_hash: str, peer: Peer, owner: str | None, now: float | None = None,
                       progress: int = 0) -> tuple[list[Peer], bool]:
        return self.peers.announce(info_hash, peer, owner, now, progress)

    async def rescue(self, info_hash: str, peer_id: str, helpers: int, now: float | None = None) -> Rescue | None:
        return self.peers.rescue(info_hash, peer_id, helpers, now)

    async def is_origin(self, info_hash: str, peer: Peer) -> bool:
        return self.peers.is_origin(info_hash, peer)

    async def holder(self, peer_id: str) -> str | None:
        holder = self.peers.holder(peer_id)
        return None if holder is None else str(holder)

    async def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]:
        return self.peers.peers_for(info_hash, exclude, now)

    async def leave(self, info_hash: str, owner: str) -> None:
        self.peers.leave(info_hash, owner)

    async def forget(self, info_hash: str, owners: Collection[str]) -> int:
        return self.peers.forget(info_hash, owners)

    async def drop_owner(self, owner: str) -> int:
        return self.peers.drop_owner(owner)

    async def expire_entries(self, now: float | None = None) -> list[tuple[str, str | None]]:
        return [(info_hash, None if owner is None else str(owner))
                for info_hash, owner in self.peers.expire_entries(now)]

    async def count(self) -> int:
        return len(self.peers)

    async def aclose(self) -> None:
        pass


def open_store(config: TrackerConfig) -> Store:
    """The store ``config.store`` names: "" or "memory" for this process's memory, or a redis:// URL."""
    ttl = 3 * config.announce_interval
    if config.store in ("", "memory"):
        return MemoryStore(PeerStore(ttl=ttl, max_peers=config.max_peers, stall_after=config.stall_after))
    from swarmreg.tracker.redis_store import RedisStore  # redis-py only where it is used

    return RedisStore(config.store, ttl=ttl, max_peers=config.max_peers, stall_after=config.stall_after)
