"""The tracker's peer store in Redis: every tracker naming the same server sees the same peers.

redis-py's asyncio client needs asyncio, so the sync client runs in Trio worker threads (at most
POOL at once, one pooled connection each). Each change is one optimistic transaction (WATCH the
keys read, MULTI/EXEC the writes, again on a conflict) that ports PeerStore's logic as it is; the
key layout and TTLs are in docs/swarm.md ("Trackers on Redis"). Times are the wall clock, which
trackers on several hosts share (keep them in NTP sync).
"""

from __future__ import annotations

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
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry

from swarmreg.errors import PEER_ID_TAKEN, UNAVAILABLE, SwarmregError
from swarmreg.tracker.peers import Entry, Rescue, pick_peers, rescue_from
from swarmreg.tracker.wire import Peer

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "swarmreg:tracker:"
POOL = 16  # worker threads using Redis at once, a pooled connection each (and one for pub/sub)
TIMEOUT = 5.0  # seconds a Redis command may take before the store is unavailable
EXPIRE_BATCH = 500  # expired entries swept per transaction batch
BACKOFF = (0.5, 10.0)  # the subscriber's reconnect delays, first and longest


class _Tx:
    """One optimistic transaction: reads watch their keys; writes wait for ``commit`` (MULTI/EXEC)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.hashes: dict[str, dict[str, str]] = {}
        self._read: dict[str, dict[str, str]] = {}
        self.values: dict[str, str | None] = {}
        self._set: dict[str, float | None] = {}  # key -> its TTL, of the values to write
        self.later: list[Callable[[Any], object]] = []  # more writes, given the MULTI pipeline

    def hash(self, key: str) -> dict[str, str]:
        """The hash at ``key``, to read and change in place."""
        if key not in self.hashes:
            self.pipe.watch(key)
            self._read[key] = self.pipe.hgetall(key)
            self.hashes[key] = dict(self._read[key])
        return self.hashes[key]

    def value(self, key: str) -> str | None:
        if key not in self.values:
            self.pipe.watch(key)
            self.values[key] = self.pipe.get(key)
        return self.values[key]

    def set(self, key: str, value: str | None, ttl: float | None = None) -> None:
        """Write (None: delete) ``key``, expiring after ``ttl`` seconds if given."""
        self.values[key] = value
        self._set[key] = ttl

    def commit(self) -> None:
        pipe = self.pipe
        pipe.multi()
        for key, data in self.hashes.items():
            before = self._read[key]
            if gone := [field for field in before if field not in data]:
                pipe.hdel(key, *gone)
            if changed := {field: v for field, v in data.items() if before.get(field) != v}:
                pipe.hset(key, mapping=changed)
        for key, ttl in self._set.items():
            if (value := self.values[key]) is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, px=None if ttl is None else int(ttl * 1000))
        for write in self.later:
            write(pipe)
        pipe.execute()


def _encode(entry: Entry) -> str:
    p = entry.peer
    expires = None if entry.expires == float("inf") else entry.expires
    return json.dumps([p.host, p.port, p.complete, p.origin, entry.owner, expires, entry.progress,
                       entry.since, entry.rescues], separators=(",", ":"))


def _owner(entry: Entry) -> str | None:
    """Whose ``entry`` is: owners in Redis are strings."""
    return None if entry.owner is None else str(entry.owner)


def _decode(peer_id: str, raw: str) -> Entry:
    host, port, complete, origin, owner, expires, progress, since, rescues = json.loads(raw)
    return Entry(Peer(peer_id, host, port, complete, origin), owner,
                 float("inf") if expires is None else expires, progress, since, rescues)


class RedisStore:
    """PeerStore's semantics over Redis, shared by trackers; also their event bus (pub/sub).

    Unlike PeerStore's, a connection's claim on its peer id lapses ``ttl`` after its last announce
    (its tracker may have died without dropping it), and ``alive`` tells whether a connection's
    tracker still runs (``heartbeat``), so another tracker may take over its peers' ids.
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
        self._limiter = trio.CapacityLimiter(POOL)
        self._down = False  # logged once per outage

    # Keys (docs/swarm.md lists them with their TTLs).
    def _torrent(self, info_hash: str) -> str:
        return f"{self.prefix}t:{info_hash}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}owned:{owner}"

    def _claim(self, peer_id: str) -> str:
        return f"{self.prefix}claim:{peer_id}"

    def _ident(self, owner: str) -> str:
        return f"{self.prefix}id:{owner}"

    def _origin_ids(self, peer_id: str) -> str:
        return f"{self.prefix}origin:{peer_id}"

    def _expiry(self) -> str:
        return f"{self.prefix}expiry"

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

    def _transact(self, fn: Callable[[_Tx], T]) -> T:
        with self.client.pipeline() as pipe:
            while True:
                tx = _Tx(pipe)
                try:
                    result = fn(tx)
                    tx.commit()
                    return result
                except WatchError:  # another tracker changed what we read: read again
                    continue

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(self._transact, lambda tx: fn(tx, *args))

    def _entries(self, tx: _Tx, info_hash: str) -> dict[str, Entry]:
        return {peer_id: _decode(peer_id, raw) for peer_id, raw in tx.hash(self._torrent(info_hash)).items()}

    def _remove(self, tx: _Tx, info_hash: str, peer_id: str, owner: str | None) -> Entry | None:
        """Forget the torrent's entry for ``peer_id`` if ``owner``'s; returns it."""
        torrent = tx.hash(self._torrent(info_hash))
        if (raw := torrent.get(peer_id)) is None or (entry := _decode(peer_id, raw)).owner != owner:
            return None
        del torrent[peer_id]
        tx.later.append(lambda pipe: pipe.zrem(self._expiry(), f"{info_hash}/{peer_id}"))
        if owner is not None and (owned := tx.hash(self._owned(owner))).get(info_hash) == peer_id:
            del owned[info_hash]
        if entry.peer.origin:
            left = int(tx.value(self._origin_ids(peer_id)) or 1) - 1
            tx.set(self._origin_ids(peer_id), str(left) if left else None)
        return entry

    def _check_claim(self, tx: _Tx, peer_id: str, owner: str | None) -> None:
        if int(tx.value(self._origin_ids(peer_id)) or 0):
            raise SwarmregError(PEER_ID_TAKEN, f"peer id {peer_id} is an origin's")
        holder = tx.value(self._claim(peer_id))
        if holder is not None and holder != owner:
            raise SwarmregError(PEER_ID_TAKEN, f"peer id {peer_id} belongs to another connection")
        if owner is None:
            return
        mine = tx.value(self._ident(owner))
        if mine is not None and mine != peer_id:
            raise SwarmregError(PEER_ID_TAKEN, f"this connection announced peer id {mine}: it cannot be another peer")
        tx.set(self._ident(owner), peer_id, self.ttl)
        tx.set(self._claim(peer_id), owner, self.ttl)

    def _evict(self, tx: _Tx, peer_id: str) -> None:
        if (holder := tx.value(self._claim(peer_id))) is None:
            return
        tx.set(self._claim(peer_id), None)
        for info_hash, owned_id in list(tx.hash(self._owned(holder)).items()):
            if owned_id == peer_id:
                self._remove(tx, info_hash, peer_id, holder)

    def _announce(self, tx: _Tx, info_hash: str, peer: Peer, owner: str | None, now: float,
                  progress: int) -> tuple[list[Peer], bool]:
        if peer.origin:
            self._evict(tx, peer.peer_id)
        else:
            self._check_claim(tx, peer.peer_id, owner)
        previous_raw = tx.hash(self._torrent(info_hash)).get(peer.peer_id)
        previous = None if previous_raw is None else _decode(peer.peer_id, previous_raw)
        if owner is not None:
            if (stale := tx.hash(self._owned(owner)).get(info_hash)) not in (None, peer.peer_id):
                self._remove(tx, info_hash, stale, owner)
        if previous is not None:
            self._remove(tx, info_hash, peer.peer_id, _owner(previous))
        grew = previous is None or progress > previous.progress or peer.complete
        since, rescues = (now, 0) if grew or previous is None else (previous.since, previous.rescues)
        expires = float("inf") if peer.origin else now + self.ttl
        entry = Entry(peer, owner, expires, progress, since, rescues)
        tx.hash(self._torrent(info_hash))[peer.peer_id] = _encode(entry)
        if not peer.origin:
            member = f"{info_hash}/{peer.peer_id}"
            tx.later.append(lambda pipe: pipe.zadd(self._expiry(), {member: expires}))
        if owner is not None:
            tx.hash(self._owned(owner))[info_hash] = peer.peer_id
            if not peer.origin:  # a dead tracker's connections leave no keys behind
                tx.later.append(lambda pipe: pipe.pexpire(self._owned(owner), int(2000 * self.ttl)))
        if peer.origin:
            tx.set(self._origin_ids(peer.peer_id), str(int(tx.value(self._origin_ids(peer.peer_id)) or 0) + 1))
        news = previous is None or previous.peer != peer
        entries = self._entries(tx, info_hash).values()
        return pick_peers(entries, peer.peer_id, now, self.max_peers, self._rng), news

    async def announce(self, info_hash: str, peer: Peer, owner: str | None, now: float | None = None,
                       progress: int = 0) -> tuple[list[Peer], bool]:
        """PeerStore.announce."""
        return await self._run(self._announce, info_hash, peer, owner, time.time() if now is None else now, progress)

    def _rescue(self, tx: _Tx, info_hash: str, peer_id: str, helpers: int, now: float) -> Rescue | None:
        entries = self._entries(tx, info_hash)
        rescue = rescue_from(entries, peer_id, helpers, now, self.max_peers, self.stall_after)
        if rescue is not None:  # counted in the stalled peer's entry
            tx.hash(self._torrent(info_hash))[peer_id] = _encode(entries[peer_id])
        return rescue

    async def rescue(self, info_hash: str, peer_id: str, helpers: int, now: float | None = None) -> Rescue | None:
        """PeerStore.rescue."""
        return await self._run(self._rescue, info_hash, peer_id, helpers, time.time() if now is None else now)

    async def is_origin(self, info_hash: str, peer: Peer) -> bool:
        """PeerStore.is_origin."""
        raw = cast(str | None, await self._call(self.client.hget, self._torrent(info_hash), peer.peer_id))
        if raw is None:
            return False
        entry = _decode(peer.peer_id, raw)
        return entry.peer.origin and (entry.peer.host, entry.peer.port) == (peer.host, peer.port)

    async def holder(self, peer_id: str) -> str | None:
        """PeerStore.holder: the connection (of any tracker) ``peer_id`` belongs to."""
        return cast(str | None, await self._call(self.client.get, self._claim(peer_id)))

    async def peers_for(self, info_hash: str, exclude: str = "", now: float | None = None) -> list[Peer]:
        """PeerStore.peers_for."""
        raw = cast(dict[str, str], await self._call(self.client.hgetall, self._torrent(info_hash)))
        now = time.time() if now is None else now
        return pick_peers((_decode(pid, r) for pid, r in raw.items()), exclude, now, self.max_peers, self._rng)

    def _leave(self, tx: _Tx, info_hash: str, owner: str) -> None:
        if (peer_id := tx.hash(self._owned(owner)).get(info_hash)) is not None:
            self._remove(tx, info_hash, peer_id, owner)

    async def leave(self, info_hash: str, owner: str) -> None:
        """PeerStore.leave."""
        await self._run(self._leave, info_hash, owner)

    def _forget(self, tx: _Tx, info_hash: str, owners: Collection[str]) -> int:
        gone = [(peer_id, _owner(e)) for peer_id, e in self._entries(tx, info_hash).items() if e.owner in owners]
        for peer_id, owner in gone:
            self._remove(tx, info_hash, peer_id, owner)
        return len(gone)

    async def forget(self, info_hash: str, owners: Collection[str]) -> int:
        """PeerStore.forget (for every tracker: the origins' entries are shared)."""
        return await self._run(self._forget, info_hash, frozenset(owners))

    def _drop_owner(self, tx: _Tx, owner: str) -> int:
        owned = list(tx.hash(self._owned(owner)).items())
        for info_hash, peer_id in owned:
            self._remove(tx, info_hash, peer_id, owner)
        tx.hash(self._owned(owner)).clear()
        if (claimed := tx.value(self._ident(owner))) is not None:
            tx.set(self._ident(owner), None)
            if tx.value(self._claim(claimed)) == owner:
                tx.set(self._claim(claimed), None)
        return len(owned)

    async def drop_owner(self, owner: str) -> int:
        """PeerStore.drop_owner."""
        return await self._run(self._drop_owner, owner)

    def _expire_one(self, tx: _Tx, *, member: str, now: float) -> tuple[str, str | None] | None:
        info_hash, _, peer_id = member.partition("/")
        raw = tx.hash(self._torrent(info_hash)).get(peer_id)
        if raw is None:  # gone already: only the index entry was left
            tx.later.append(lambda pipe: pipe.zrem(self._expiry(), member))
            return None
        entry = _decode(peer_id, raw)
        if entry.expires > now:  # announced again since it was read
            return None
        self._remove(tx, info_hash, peer_id, _owner(entry))
        return info_hash, _owner(entry)

    def _expire(self, now: float) -> list[tuple[str, str | None]]:
        expired: list[tuple[str, str | None]] = []
        while members := cast(list[str], self.client.zrangebyscore(self._expiry(), "-inf", now, start=0,
                                                                   num=EXPIRE_BATCH)):
            for member in members:
                if (gone := self._transact(partial(self._expire_one, member=member, now=now))) is not None:
                    expired.append(gone)
            if len(members) < EXPIRE_BATCH:
                break
        return expired

    async def expire_entries(self, now: float | None = None) -> list[tuple[str, str | None]]:
        """PeerStore.expire_entries, for every tracker's peers (whichever tracker sweeps first)."""
        return await self._call(self._expire, time.time() if now is None else now)

    def _count(self) -> int:
        return sum(self.client.hlen(key) for key in self.client.scan_iter(match=self._torrent("*"), count=1000))

    async def count(self) -> int:
        """How many entries, in every torrent (a scan: for tests and the odd look)."""
        return await self._call(self._count)

    async def heartbeat(self, tracker_id: str, ttl: float) -> None:
        """Say that ``tracker_id`` runs, for ``ttl`` seconds."""
        await self._call(partial(self.client.set, self._tracker(tracker_id), "1", px=int(ttl * 1000)))

    async def retire(self, tracker_id: str) -> None:
        """``tracker_id`` stops: its connections' peer ids are free at once."""
        await self._call(self.client.delete, self._tracker(tracker_id))

    async def alive(self, tracker_id: str) -> bool:
        """Whether ``tracker_id``'s heartbeat is fresh."""
        return bool(await self._call(self.client.exists, self._tracker(tracker_id)))

    async def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every tracker listening (fire and forget: one that is not misses it)."""
        await self._call(self.client.publish, self.channel, json.dumps(event, separators=(",", ":")))

    def _subscribe(self) -> Any:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
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
                if message is not None and message.get("type") == "message":
                    trio.from_thread.run_sync(deliver, json.loads(message["data"]))
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
            except (RedisError, ValueError) as error:  # Redis trouble, or an event that is not JSON
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
