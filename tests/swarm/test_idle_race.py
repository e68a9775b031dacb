"""Idle release racing the torrents' users: an add while a release removes torrents."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import random_bytes
from tests.swarm.test_engine import engine, seed_file


async def test_a_torrent_asked_for_while_a_release_runs_stays_and_one_being_removed_comes_back(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    seeder = engine(idle_torrent_timeout=0)
    await nursery.start(seeder.run)
    first = seed_file(tmp_path / "a", random_bytes(1 << 20, seed=1))
    second = seed_file(tmp_path / "b", random_bytes(1 << 20, seed=2))
    await seeder.add(first, tmp_path / "a", seed=True)
    kept = await seeder.add(second, tmp_path / "b", seed=True)
    await trio.sleep(0.3)
    again = []
    released: list[str] = []
    seeder.on_release.append(lambda torrent: released.append(torrent.info_hash))

    async def ask_during_the_release() -> None:
        while seeder.get(first.info_hash) is not None:  # the first removal has begun
            await trio.sleep(0)
        # Asked for (a metainfo request) while the release awaits the first removal.
        assert await seeder.add(second, tmp_path / "b", seed=True) is kept
        with trio.fail_after(10):  # re-added while its removal is pending: neither hangs nor fails
            again.append(await seeder.add(first, tmp_path / "a", seed=True))

    with trio.fail_after(20):
        async with trio.open_nursery() as both:
            both.start_soon(ask_during_the_release)
            await seeder.release_idle(0.1)
    assert released == [], "the first came back before its removal ended: the agent must not leave its swarm"
    assert seeder.get(second.info_hash) is kept and kept.error is None, "asked for: not idle"
    await trio.sleep(0.5)  # the first removal's alert has come: it names the old torrent, not the new
    assert seeder.get(first.info_hash) is again[0] and again[0].error is None
    assert again[0].handle.is_valid() and again[0].finished.is_set()
    seeder.close()


async def test_a_removal_in_flight_when_the_engine_stops_returns_at_once(nursery: trio.Nursery,
                                                                        tmp_path: Path) -> None:
    # A removal outside the engine's nursery (a repair, a failed download's, shielded) is not
    # cancelled with it: its wait for the alert ends when the session does.
    seeder = engine(idle_torrent_timeout=0)
    await nursery.start(seeder.run)
    metainfo = seed_file(tmp_path / "a", random_bytes(1 << 20, seed=1))
    torrent = await seeder.add(metainfo, tmp_path / "a", seed=True)
    await trio.sleep(0.3)
    with trio.fail_after(3):  # not the removal's own 10 s bound
        async with trio.open_nursery() as both:
            both.start_soon(seeder.release_idle, 0.1)
            while seeder.get(metainfo.info_hash) is not None:
                await trio.sleep(0)
            seeder.close()  # before the removal's alert is handled
    assert torrent.error == "removed"
    with trio.fail_after(1):
        await seeder.remove(torrent)  # after the stop: nothing left to remove, no error
