"""The tracker's peer store in Redis: every tracker naming the same server sees the same peers.

redis-py's asyncio client needs asyncio, so the sync client runs in Trio worker threads (at most
POOL at once, one pooled connection each). Each change is one Lua script (redis_scripts.py),
atomic in Redis and one round trip, that ports PeerStore's logic; the key layout and TTLs are in
docs/swarm.md ("Trackers on Redis"). Times are the wall clock, which trackers on several hosts
share (keep them in NTP sync).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Any, TypeVar, cast

import redis
import trio
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from swarmreg.errors import PEER_ID_TAKEN, UNAVAILABLE, SwarmregError
from swarmreg.tracker import redis_scripts
from swarmreg.tracker.peers import Entry, Rescue, rescue_from
from swarmreg.tracker.wire import Peer

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "swarmreg:tracker:"
POOL = 16  # worker threads using Redis at once, a pooled connection each (and one for pub/sub)
TIMEOUT = 5.0  # seconds a Redis command may take before the store is unavailable
EXPIRE_BATCH = 500  # expired entries one script sweeps (Redis runs nothing else meanwhile)
BACKOFF = (0.5, 10.0)  # the subscriber's reconnect delays, first and longest
_SCRIPTS = ("announce", "peers", "rescue", "leave", "forget", "drop_owner", "expire")


def _decode(peer_id: str, raw: str) -> Entry:
    host, port, complete, origin, owner, expires, progress, since, rescues = json.loads(raw)
    return Entry(Peer(peer_id, host, port, complete, origin), owner,
                 float("inf") if expires is None else expires, progress, since, rescues)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class RedisStore:
    """PeerStore's semantics over Redis, shared by trackers; also their event bus (pub/sub).

    Unlike PeerStore's, a connection's claim on its peer id lapses ``ttl`` after its last announce
    (its tracker may have died without dropping it), and ``alive`` tells whether a connection's
    tracker still runs (``heartbeat``), so another tracker may take over its peers' ids. Peers are
    drawn at random from a set per torrent and class (seeds, others): an announce costs
    O(max_peers), not O(swarm); one that expired but is not swept yet is left out, so a reply
    may have a few less than max_peers until the next sweep.
    """

    def __init__(self, url: str, ttl: float, max_peers: int, stall_after: float = 4.0,
                 rng: random.Random | None = None, prefix: str = PREFIX) -> None:
        self.ttl = ttl
        self.max_peers = max_peers
        self.stall_after = stall_after
        self.prefix = prefix
        self.channel = prefix + "events"
        self._rng = rng or random.Random()
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=POOL + 1, timeout=TIMEOUT, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            decode_responses=True, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
        self.client = redis.Redis(connection_pool=pool)
        self._scripts = {name: self.client.register_script(getattr(redis_scripts, name.upper())) for name in _SCRIPTS}
        self._limiter = trio.CapacityLimiter(POOL)
        self._down = False  # logged once per outage
        self._beats = itertools.count(1)  # this tracker's heartbeats

    def _tracker(self, tracker_id: str) -> str:
        return f"{self.prefix}tracker:{tracker_id}"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread; Redis trouble is UNAVAILABLE (logged once per outage)."""
        try:
            result = await trio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)
        except RedisError as error:
            if not self._down:
                self._down = True
                log.warning("the tracker's Redis peer store is unavailable: %s", error)
            raise SwarmregError(UNAVAILABLE, "the tracker's peer store is unavailable") from error
        if self._down:
            self._down = False
            log.info("the tracker's Redis peer store is back")
        return result

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._call(partial(self._scripts[name], args=[self.prefix, *args]))

    def _picked(self, seeds: int, flat: list[str]) -> list[Peer]:
        """Peers as the scripts draw them: seeds first, then others, each shuffled."""
        peers = [_decode(flat[i], flat[i + 1]).peer for i in range(0, len(flat), 2)]
        first, rest = peers[:seeds], peers[seeds:]
        self._rng.shuffle(first)
        self._rng.shuffle(rest)
        return (first + rest)[:self.max_peers]

    async def announce(self, info_hash: str, peer: Peer, owner: str | None, now: float | None = None,
                       progress: int = 0) -> tuple[list[Peer], bool]:
        """PeerStore.announce."""
        reply = await self._script(
            "announce", info_hash, peer.peer_id, owner or "", peer.host, peer.port, int(peer.complete),
            int(peer.origin), _now(now), self.ttl, progress, self.max_peers)
        if reply[0] == "taken":
            raise SwarmregError(PEER_ID_TAKEN, reply[1])
        return self._picked(int(reply[2]), reply[3:]), bool(reply[1])

    async def rescue(self, info_hash: str, peer_id: str, helpers: int, now: float | None = None) -> Rescue | None:
        """PeerStore.rescue: one look at the peer's entry, and the whole torrent only when it stalled."""
        now = _now(now)
        reply = await self._script("rescue", info_hash, peer_id, now, self.stall_after)
        if not reply:
            return None
        entries = {reply[i]: _decode(reply[i], reply[i + 1]) for i in range(1, len(reply), 2)}
        entries[peer_id].rescues = int(reply[0])  # rescue_from counts this one again
        return rescue_from(entries, peer_id, helpers, now, self.max_peers, self.stall_after)

    async def is_origin(self, info_hash: str, peer: Peer) -> bool:
        """PeerStore.is_origin."""
        raw = cast(str | None, await self._call(self.client.hget, f"{self.prefix}t:{info_hash}", peer.peer_id))
        if raw is None:
            return False
        entry = _decode(peer.peer_id, raw)
        return entry.peer.origin and (entry.peer.host, entry.peer.port) == (peer.host, peer.port)

    async def holder(self, peer_id: str) -> str | None:
        """PeerStore.holder: the connection (of any tracker) ``peer_id`` belongs to."""
        return cast(str | None, await self._call(self.client.get, f"{self.prefix}claim:{peer_id}"))

    async def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]:
        """PeerStore.peers_for."""
        reply = await self._script("peers", info_hash, exclude, _now(now), self.max_peers)
        return self._picked(int(reply[0]), reply[1:])

    async def leave(self, info_hash: str, owner: str) -> None:
        """PeerStore.leave."""
        await self._script("leave", info_hash, owner)

    async def forget(self, info_hash: str, owners: Collection[str]) -> int:
        """PeerStore.forget (for every tracker: the origins' entries are shared)."""
        return int(await self._script("forget", info_hash, *owners)) if owners else 0

    async def drop_owner(self, owner: str) -> int:
        """PeerStore.drop_owner."""
        return int(await self._script("drop_owner", owner))

    async def expire_entries(self, now: float | None = None) -> list[tuple[str, str | None]]:
        """PeerStore.expire_entries, for every tracker's peers (whichever tracker sweeps first)."""
        now = _now(now)
        expired: list[tuple[str, str | None]] = []
        while True:
            reply = await self._script("expire", now, EXPIRE_BATCH)
            expired += [(reply[i], reply[i + 1] or None) for i in range(1, len(reply), 2)]
            if int(reply[0]) < EXPIRE_BATCH:
                return expired

    def _count(self) -> int:
        return sum(self.client.hlen(key) for key in self.client.scan_iter(match=f"{self.prefix}t:*", count=1000))

    async def count(self) -> int:
        """How many entries, in every torrent (a scan: for tests and the odd look)."""
        return await self._call(self._count)

    async def heartbeat(self, tracker_id: str, ttl: float) -> None:
        """Say that ``tracker_id`` runs, for ``ttl`` seconds; each beat is another value (``beat``)."""
        await self._call(partial(self.client.set, self._tracker(tracker_id), str(next(self._beats)),
                                 px=int(ttl * 1000)))

    async def retire(self, tracker_id: str) -> None:
        """``tracker_id`` stops: its connections' peer ids are free at once."""
        await self._call(self.client.delete, self._tracker(tracker_id))

    async def beat(self, tracker_id: str) -> str | None:
        """``tracker_id``'s last heartbeat while it is fresh (a tracker that runs changes it every
        beat), else None."""
        beat = await self._call(self.client.get, self._tracker(tracker_id))
        return None if beat is None else str(beat)

    async def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every tracker listening (fire and forget: one that is not misses it)."""
        await self._call(self.client.publish, self.channel, json.dumps(event, separators=(",", ":")))

    def _subscribe(self) -> Any:
        # Any: redis-py before 8.2 has no types for pubsub(), later releases do.
        client: Any = self.client
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    @staticmethod
    def _pump(pubsub: Any, deliver: Callable[[dict[str, Any]], None]) -> None:
        """In a worker thread: hand each event to ``deliver`` in Trio until cancelled or Redis fails."""
        try:
            while True:
                trio.from_thread.check_cancelled()
                message = pubsub.get_message(timeout=0.5)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    event = json.loads(message["data"])
                except ValueError:  # not one of ours: whoever else writes to the channel
                    log.warning("ignoring an event that is not JSON on %s", message.get("channel"))
                    continue
                if isinstance(event, dict):
                    trio.from_thread.run_sync(deliver, event)
        finally:
            pubsub.close()

    async def listen(self, deliver: Callable[[dict[str, Any]], None], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand ``deliver`` every event published, until cancelled. Started once subscribed (or
        once the first try failed: a tracker starts with Redis down); survives Redis restarts,
        retrying with backoff and logging once per outage, and never raises."""
        delay = BACKOFF[0]
        started = down = False
        while True:
            try:
                pubsub = await trio.to_thread.run_sync(self._subscribe, limiter=self._limiter)
                if down:
                    log.info("the tracker hears other trackers' pushes again")
                down, delay = False, BACKOFF[0]
                if not started:
                    started = True
                    task_status.started()
                await trio.to_thread.run_sync(self._pump, pubsub, deliver, abandon_on_cancel=True)
            except RedisError as error:
                if not down:
                    log.warning("listening to other trackers' pushes failed (retrying): %s", error)
                down = True
            except Exception:  # a bug of ours: logged, the tracker serves on
                log.exception("listening to other trackers' pushes failed (retrying)")
                down = True
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay)
            delay = min(2 * delay, BACKOFF[1])

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.client.close)
