"""The agent's cache policy in-process under Trio's MockClock: tti and ttl on the timer, pins, and
writes waiting for room (a real blob store in tmp_path; the daemon side is tests/agent/test_cache.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from swarmreg.agent.cache import BlobCache, footprint
from swarmreg.config import CacheConfig
from swarmreg.digest import Digest
from swarmreg.errors import STORAGE_FULL, SwarmregError
from swarmreg.layout import DataLayout
from swarmreg.store.blobstore import BlobStore
from tests.conftest import random_bytes


def make_cache(tmp_path: Path, **limits: float) -> BlobCache:
    store = BlobStore(tmp_path, fsync=False)
    store.prepare()

    async def drop(digest: Digest, partial: bool) -> None:
        await store.delete(digest)  # what the agent's drop does to the store

    return BlobCache(CacheConfig(**limits), DataLayout(tmp_path), store, drop=drop, wait_for_room=30)  # type: ignore[arg-type]


async def hold(cache: BlobCache, data: bytes) -> Digest:
    digest = Digest.of(data)

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await cache.reserve(digest, len(data))
    await cache.store.write(digest, chunks())
    cache.commit(digest, len(data))
    return digest


async def test_tti_and_ttl_evict_on_the_timer(mock_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    cache = make_cache(tmp_path, tti=60.0, ttl=300.0)
    read, unread = await hold(cache, b"read often"), await hold(cache, b"never read")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run, stop)
        assert cache.interval() == 10.0
        for _ in range(5):  # 50 s: the unread one's idle time is under tti still
            mock_clock.jump(10)
            await trio.testing.wait_all_tasks_blocked()
        assert unread in cache
        cache.touch(read)
        changed = cache.changed
        mock_clock.jump(15)  # 65 s: past tti
        await changed.wait()
        assert unread not in cache and unread not in cache.store and read in cache
        assert [(e.digest, e.reason) for e in cache.recent] == [(unread, "tti")]
        with cache.pinned(read):  # a pinned blob outlives its ttl
            for _ in range(30):
                cache.touch(read)
                mock_clock.jump(10)
                await trio.testing.wait_all_tasks_blocked()
            assert read in cache
        changed = cache.changed
        mock_clock.jump(10)
        await changed.wait()
        assert [(e.digest, e.reason) for e in cache.recent] == [(unread, "tti"), (read, "ttl")]
        assert cache.used == 0 and cache.stats()["evicted"]["count"] == 2
        stop.set()  # the daemon stops: the timer ends at once (the nursery closes without a cancel)


async def test_a_write_waits_for_a_pinned_blob_then_evicts_it(mock_clock: trio.testing.MockClock,
                                                              tmp_path: Path) -> None:
    data = random_bytes(10_000)
    cache = make_cache(tmp_path, max_size=footprint(len(data)) + 100)
    held = await hold(cache, data)
    release = cache.pin(held)
    reserved = trio.Event()

    async def write() -> None:
        await cache.reserve(Digest.of(b"next"), 4)
        reserved.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not reserved.is_set() and held in cache.store
        release()
        await reserved.wait()
    assert held not in cache and held not in cache.store
    assert cache.used == footprint(4)


async def test_a_write_fails_when_pins_keep_the_room_too_long(mock_clock: trio.testing.MockClock,
                                                             tmp_path: Path) -> None:
    data = random_bytes(10_000)
    cache = make_cache(tmp_path, max_size=footprint(len(data)) + 100)
    held = await hold(cache, data)
    with cache.pinned(held):
        async with trio.open_nursery() as nursery:
            failed: list[SwarmregError] = []

            async def write() -> None:
                with pytest.raises(SwarmregError) as error:
                    await cache.reserve(Digest.of(b"next"), 4)
                failed.append(error.value)

            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(31)
        [error] = failed
        assert error.code is STORAGE_FULL and error.status == 507
    assert held in cache and cache.used == footprint(len(data))


async def test_a_blob_bigger_than_the_limit_fails_at_once(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, max_size=2 * footprint(5000))
    small = await hold(cache, b"x")
    with pytest.raises(SwarmregError) as error:
        await cache.reserve(Digest.of(b"big"), 2 * footprint(5000))
    assert error.value.code is STORAGE_FULL and "max_size" in error.value.message
    assert small in cache.store  # nothing evicted for a write that can never fit


async def test_a_restart_counts_what_the_store_holds_least_recently_read_first(tmp_path: Path) -> None:
    cache = make_cache(tmp_path)
    digests = [await hold(cache, bytes([n]) * 5000) for n in range(3)]
    for age, digest in zip((300, 100, 200), digests, strict=True):  # atime and mtime, seconds ago
        os.utime(cache.store.path(digest), (cache.now() - age, cache.now() - age))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / Digest.of(b"partial").hex).write_bytes(b"p" * 3000)
    again = make_cache(tmp_path, max_size=2 * footprint(5000))
    again.load()
    assert [h.digest for h in again.held()] == [digests[0], digests[2], digests[1]]
    assert again.used == 3 * footprint(5000) + footprint(3000)
    assert await again.sweep() == 2  # the stopped download first, then the least recently read
    assert [(e.digest, e.reason) for e in again.recent] == [(Digest.of(b"partial"), "partial"),
                                                            (digests[0], "max_size")]
    assert again.used == 2 * footprint(5000)
