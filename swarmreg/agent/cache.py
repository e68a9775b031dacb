"""Which blobs an agent keeps: its [agent.cache] limits, and eviction least recently read first.

The cache counts the footprint of everything the agent writes under its data directory for blobs:
committed blobs, downloads in progress (at their full size from the start), downloads that stopped
with their file kept, and temp files of relays and inline blobs. A write reserves its footprint
first (``reserve``), and room is made then by evicting, so ``max_size`` holds at every moment.
Blobs that a response streams or a download writes are pinned and never evicted. See docs/cache.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from swarmreg.config import CacheConfig
from swarmreg.digest import ALGORITHMS, Digest
from swarmreg.errors import BLOB_IN_USE, BLOB_UNKNOWN, STORAGE_FULL, SwarmregError, log_failure
from swarmreg.layout import DataLayout
from swarmreg.store.blobstore import BlobStore

log = logging.getLogger(__name__)

# Sizes are counted in filesystem blocks, and each blob carries its metainfo files (.torrent and
# .namespace, a block each): the bytes `du` finds, not only the blobs' lengths.
BLOCK = 4096
METAINFO_BLOCKS = 2
# Evictions listed in /stats: the latest ones.
RECENT_EVICTIONS = 100
# The timer checks the limits this often at most (more often for short tti/ttl).
CHECK_INTERVAL = 10.0

# Why a blob went (the reasons /stats counts).
MAX_SIZE, DISK, TTI, TTL, ADMIN, PARTIAL = "max_size", "disk_high", "tti", "ttl", "admin", "partial"


def footprint(size: int) -> int:
    """What a blob of ``size`` bytes takes on disk: its blocks and those of its metainfo files."""
    return (-(-size // BLOCK) + METAINFO_BLOCKS) * BLOCK


@attrs.define
class Held:
    """A committed blob: its size, when it came and when it was last read (wall-clock seconds)."""

    digest: Digest
    size: int
    held_since: float
    last_read: float


@attrs.frozen
class Eviction:
    digest: Digest
    size: int
    reason: str
    at: float


# How the agent lets an evicted blob go: its torrent out of the session, the tracker told, its
# files removed (swarmreg.agent.downloads.Downloads.drop); ``partial`` for a stopped download.
Drop = Callable[[Digest, bool], Awaitable[None]]


async def _keep(_digest: Digest, _partial: bool) -> None:
    """The drop of a cache that owns no swarm (tests of the policy alone): nothing to do."""


class BlobCache:
    """The agent's held blobs and the bytes reserved for writes; evicts to stay within limits.

    ``wait_for_room`` is how long a write waits for pinned blobs to be let go when nothing else
    can be evicted (the agent's stall timeout), before it fails with STORAGE_FULL.
    """

    def __init__(self, config: CacheConfig, layout: DataLayout, store: BlobStore, *,
                 drop: Drop = _keep, wait_for_room: float = 60.0, evicts: bool = True) -> None:
        self.config = config
        self.layout = layout
        self.store = store
        self.drop = drop
        self.wait_for_room = wait_for_room
        # False when the store is shared with an origin role: its blobs are not a cache.
        self.evicts = evicts
        self._held: dict[Digest, Held] = {}
        self._pins: Counter[Digest] = Counter()
        self._reserved: dict[Digest, int] = {}  # footprints of writes in progress
        self._partial: dict[Digest, int] = {}  # downloads that stopped, their files kept
        self.used = 0  # footprints of all of the above
        self._lock = trio.Lock()  # one eviction pass at a time: none counts bytes another frees
        self._room = trio.Event()  # set when something is let go: writes waiting for room retry
        # Wall-clock seconds that follow Trio's clock (a MockClock in tests moves both).
        self._epoch = time.time() - trio.current_time()
        self.evicted: Counter[str] = Counter()
        self.evicted_bytes: Counter[str] = Counter()
        self.recent: deque[Eviction] = deque(maxlen=RECENT_EVICTIONS)
        self.changed = trio.Event()  # set (and replaced) after every eviction

    def now(self) -> float:
        return self._epoch + trio.current_time()

    # -- what is there ------------------------------------------------------------------------

    def load(self) -> None:
        """Count what the data directory holds (blocking): committed blobs, last read as their
        files' atime or mtime says (the agent restarts), and downloads a previous run left."""
        for digest in self.store.digests():
            try:
                stat = os.stat(self.store.path(digest))
            except FileNotFoundError:
                continue
            self._add_held(Held(digest, stat.st_size, stat.st_mtime, max(stat.st_atime, stat.st_mtime)))
        downloads = self.layout.downloads
        if downloads.is_dir():
            for entry in downloads.iterdir():
                left = _digest_of(entry.name)
                if left is not None and entry.is_file() and left not in self._held:
                    self._partial[left] = footprint(entry.stat().st_size)
                    self.used += self._partial[left]

    def _add_held(self, held: Held) -> None:
        if (old := self._held.pop(held.digest, None)) is not None:
            self.used -= footprint(old.size)
        self._held[held.digest] = held
        self.used += footprint(held.size)

    def held(self) -> list[Held]:
        """The held blobs, least recently read first."""
        return sorted(self._held.values(), key=lambda h: h.last_read)

    def in_use(self, digest: Digest) -> bool:
        """Whether a response streams the blob or a download (or relay) writes it."""
        return self._pins[digest] > 0 or digest in self._reserved

    def __contains__(self, digest: Digest) -> bool:
        return digest in self._held

    # -- reads ----------------------------------------------------------------------------------

    def touch(self, digest: Digest) -> None:
        """The blob was read now."""
        if (held := self._held.get(digest)) is not None:
            held.last_read = self.now()

    @contextmanager
    def pinned(self, digest: Digest) -> Iterator[None]:
        """Keep the blob from eviction for the block."""
        release = self.pin(digest)
        try:
            yield
        finally:
            release()

    def pin(self, digest: Digest) -> Callable[[], None]:
        """Keep the blob from eviction until the returned function is called (once or more)."""
        self._pins[digest] += 1
        self.touch(digest)
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]
                self._wake()
            self.touch(digest)  # read until the end

        return release

    # -- writes ---------------------------------------------------------------------------------

    async def reserve(self, digest: Digest, size: int) -> None:
        """Count ``size`` bytes about to be written for ``digest``, making room first.

        STORAGE_FULL when the blob alone passes ``max_size``, or when pinned blobs keep the room
        for longer than ``wait_for_room``. Disk pressure is made room for as far as it can be:
        past that, the write goes on (the disk may still take it).
        """
        if digest in self._reserved:
            return
        need = footprint(size)
        # A stopped download's file is the new download's start: its bytes are counted already.
        prior = self._partial.pop(digest, 0)
        self.used -= prior
        limit = self.config.max_size if self.evicts else None
        if limit is not None and need > limit:
            self._wake()
            raise SwarmregError(
                STORAGE_FULL, f"the blob ({size} bytes, {need} on disk with its metainfo) is larger than this "
                              f"agent's cache (agent.cache.max_size, {limit} bytes)", {"digest": str(digest)})
        deadline = trio.current_time() + self.wait_for_room
        try:
            while True:
                async with self._lock:
                    if await self._make_room(need):
                        self._reserved[digest] = need
                        self.used += need
                        return
                    if self._room.is_set():  # one event that every waiting write shares
                        self._room = trio.Event()
                    room = self._room
                with trio.move_on_at(deadline):
                    await room.wait()
                if trio.current_time() >= deadline:
                    break
        finally:
            if digest not in self._reserved and prior:  # failed: the stopped download's file is still there
                self._partial[digest] = prior
                self.used += prior
        raise SwarmregError(STORAGE_FULL, f"no room in this agent's cache (agent.cache.max_size) for {size} "
                                          "bytes: the blobs it holds are being read or written",
                            {"digest": str(digest)})

    def commit(self, digest: Digest, size: int) -> None:
        """The write of ``digest`` ended with the blob held."""
        self.used -= self._reserved.pop(digest, 0)
        now = self.now()
        self._add_held(Held(digest, size, now, now))
        self._wake()

    def release(self, digest: Digest, *, kept: bool = False) -> None:
        """The write of ``digest`` ended without the blob; ``kept``: its partial file stays."""
        reserved = self._reserved.pop(digest, 0)
        if kept and reserved:
            self._partial[digest] = reserved
        else:
            self.used -= reserved
        self._wake()

    def forget(self, digest: Digest) -> None:
        """The blob left the store another way (a failed seed found its file gone)."""
        if (held := self._held.pop(digest, None)) is not None:
            self.used -= footprint(held.size)
            self._wake()

    def _wake(self) -> None:
        self._room.set()

    # -- eviction -------------------------------------------------------------------------------

    async def _make_room(self, need: int) -> bool:
        """Evict until ``need`` more bytes fit ``max_size`` (and, as far as it can, disk_high);
        False when the blobs in use leave too little room."""
        if not self.evicts:
            return True
        limit = self.config.max_size
        over = 0 if limit is None else self.used + need - limit
        pressure = self._disk_over(need)
        if over <= 0 and pressure <= 0:
            return True
        victims = self._victims()
        if over > 0 and sum(self._footprint(digest) for digest, _ in victims) < over:
            return False  # evicting all that may go would not do: wait for pins to go first
        freed = 0
        for victim, partial in victims:
            if freed >= max(over, pressure):
                break
            reason = PARTIAL if partial else (MAX_SIZE if freed < over else DISK)
            freed += await self._evict(victim, reason)
        return freed >= over

    def _disk_over(self, need: int) -> int:
        """Bytes above disk_low to free when the filesystem's use with the writes in progress and
        ``need`` more (counted whole: an overestimate of what is left to write) passes disk_high."""
        high, low = self.config.disk_high, self.config.low
        if high is None or low is None:
            return 0
        try:
            stat = os.statvfs(self.layout.root)
        except OSError as error:
            log_failure(log, "reading the data directory's disk usage", error)
            return 0
        total = stat.f_blocks * stat.f_frsize
        projected = (stat.f_blocks - stat.f_bfree) * stat.f_frsize + sum(self._reserved.values()) + need
        return int(projected - low * total) if projected > high * total else 0

    def _victims(self) -> list[tuple[Digest, bool]]:
        """What may go, in order: stopped downloads, then held blobs least recently read first."""
        partial = [(digest, True) for digest in self._partial if not self.in_use(digest)]
        return partial + [(held.digest, False) for held in self.held() if not self.in_use(held.digest)]

    def _footprint(self, digest: Digest) -> int:
        if digest in self._partial:
            return self._partial[digest]
        held = self._held.get(digest)
        return 0 if held is None else footprint(held.size)

    async def _evict(self, digest: Digest, reason: str) -> int:
        """Let the blob go (its accounting at once, its torrent and files through ``drop``);
        returns the bytes freed."""
        if digest in self._partial:
            size = freed = self._partial.pop(digest)
            partial = True
        elif (held := self._held.pop(digest, None)) is not None:
            size, freed, partial = held.size, footprint(held.size), False
        else:
            return 0
        self.used -= freed
        self.evicted[reason] += 1
        self.evicted_bytes[reason] += size
        self.recent.append(Eviction(digest, size, reason, self.now()))
        log.info("evicted %s (%d bytes): %s", digest, size, _REASONS[reason])
        try:
            with trio.CancelScope(shield=True):  # half-dropped, a blob would be neither held nor gone
                await self.drop(digest, partial)
        except Exception as error:  # background work: the agent serves on
            log_failure(log, f"evicting {digest}", error)
        self.changed.set()
        self.changed = trio.Event()
        return freed

    async def evict(self, digest: Digest) -> Eviction:
        """Evict one blob now (the admin's DELETE /cmd/evict)."""
        if not self.evicts:
            raise SwarmregError(BLOB_IN_USE, "this agent shares its store with an origin role: nothing is evicted",
                                {"digest": str(digest)})
        async with self._lock:
            if self.in_use(digest):
                raise SwarmregError(BLOB_IN_USE, "the blob is being read or written: try again once that ended",
                                    {"digest": str(digest)})
            if digest not in self._held and digest not in self._partial:
                raise SwarmregError(BLOB_UNKNOWN, "this agent does not hold the blob", {"digest": str(digest)})
            await self._evict(digest, ADMIN)
        return self.recent[-1]

    async def sweep(self) -> int:
        """Evict what tti and ttl expired, then what the size and disk limits want gone; returns
        how many blobs went."""
        if not self.evicts:
            return 0
        before = sum(self.evicted.values())
        async with self._lock:
            now = self.now()
            tti, ttl = self.config.tti, self.config.ttl
            for held in self.held():
                if self.in_use(held.digest):
                    continue
                if ttl is not None and now - held.held_since >= ttl:
                    await self._evict(held.digest, TTL)
                elif tti is not None and now - held.last_read >= tti:
                    await self._evict(held.digest, TTI)
            await self._make_room(0)
        return sum(self.evicted.values()) - before

    def interval(self) -> float:
        """How often the timer sweeps: CHECK_INTERVAL, or a quarter of the shorter of tti and ttl."""
        ages = [age for age in (self.config.tti, self.config.ttl) if age is not None]
        return min([CHECK_INTERVAL, *(max(0.25, age / 4) for age in ages)])

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep on a timer until ``stop`` is set (the daemon stops: nothing to wait out); a failed
        sweep is logged and the next one runs."""
        task_status.started()
        while True:
            with trio.move_on_after(self.interval()):
                await stop.wait()
            if stop.is_set():
                return
            try:
                await self.sweep()
            except Exception as error:  # background work: the agent serves on
                log_failure(log, "sweeping the blob cache", error)

    # -- reports --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The cache's part of the agent's /stats."""
        return {
            "held": len(self._held), "used": self.used, "reserved": sum(self._reserved.values()),
            "partial": sum(self._partial.values()), "pinned": len(self._pins),
            "limits": {"max_size": self.config.max_size, "disk_high": self.config.disk_high,
                       "disk_low": self.config.low, "tti": self.config.tti, "ttl": self.config.ttl},
            "evicted": {"count": sum(self.evicted.values()), "bytes": sum(self.evicted_bytes.values()),
                        "reasons": {reason: {"count": count, "bytes": self.evicted_bytes[reason]}
                                    for reason, count in self.evicted.items()}},
            "recent": [{"digest": str(e.digest), "size": e.size, "reason": e.reason, "at": round(e.at, 3)}
                       for e in reversed(self.recent)],
        }

    def listing(self) -> list[dict[str, Any]]:
        """Every held blob (GET /cmd/blob/list), least recently read first."""
        return [{"digest": str(h.digest), "size": h.size, "last_read": round(h.last_read, 3),
                 "held_since": round(h.held_since, 3), "pinned": self.in_use(h.digest)} for h in self.held()]


_REASONS = {
    MAX_SIZE: "to make room within agent.cache.max_size",
    DISK: "the disk is past agent.cache.disk_high",
    TTI: "not read for agent.cache.tti",
    TTL: "held for agent.cache.ttl",
    ADMIN: "evicted by the admin API",
    PARTIAL: "a stopped download, to make room",
}


def _digest_of(name: str) -> Digest | None:
    """The digest of a download file named by its hex (sha256: 64 digits, sha512: 128)."""
    for algorithm in ALGORITHMS:
        try:
            return Digest(name, algorithm)
        except SwarmregError:
            continue
    return None
