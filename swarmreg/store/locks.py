"""One lock per digest, for the writers of a blob store and its garbage collector.

A commit (a rename into place that also renews the file's modification time) and the
collector's "still old? then unlink" are each done under the digest's lock, so a push that
re-uploads a blob the collector is removing lands wholly before (and the collector's re-check
keeps the fresh file) or wholly after (and re-creates it). Locks exist only while held or
waited for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from swarmreg.digest import Digest


class DigestLocks:
    """A ``trio.Lock`` per digest, made on first use and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Digest, trio.Lock] = {}

    @asynccontextmanager
    async def hold(self, digest: Digest) -> AsyncIterator[None]:
        """Hold the digest's lock, waiting for it if need be."""
        lock = self._locks.setdefault(digest, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._drop(digest, lock)

    @contextmanager
    def try_hold(self, digest: Digest) -> Iterator[bool]:
        """Hold the digest's lock if nobody does (True), else do nothing (False): the collector
        skips a blob that is being written rather than wait for it."""
        lock = self._locks.setdefault(digest, trio.Lock())
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
            self._drop(digest, lock)

    def busy(self, digest: Digest) -> bool:
        """Whether someone holds the digest's lock now."""
        lock = self._locks.get(digest)
        return lock is not None and lock.locked()

    def _drop(self, digest: Digest, lock: trio.Lock) -> None:
        if not lock.locked() and not lock.statistics().tasks_waiting and self._locks.get(digest) is lock:
            del self._locks[digest]
