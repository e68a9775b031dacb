"""Per-digest locks: the collector skips a digest a commit holds, and no lock outlives its use."""

from __future__ import annotations

import trio

from swarmreg.digest import Digest
from swarmreg.store.locks import DigestLocks


async def test_try_hold_skips_a_held_digest_and_locks_go_when_unused() -> None:
    locks = DigestLocks()
    one, other = Digest.of(b"one"), Digest.of(b"other")
    held = trio.Event()
    release = trio.Event()

    async def commit() -> None:
        async with locks.hold(one):
            held.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        await held.wait()
        assert locks.busy(one)
        with locks.try_hold(one) as got:
            assert not got
        with locks.try_hold(other) as got:
            assert got and locks.busy(other)
        assert not locks.busy(other)
        release.set()
    with locks.try_hold(one) as got:
        assert got
    assert locks._locks == {}
