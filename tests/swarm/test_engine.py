"""The swarm engine: two real libtorrent sessions in one Trio run, alerts pushed through the fd."""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from pathlib import Path

import pytest
import trio

from swarmreg.config import Address, SwarmConfig
from swarmreg.digest import Digest
from swarmreg.errors import UNAVAILABLE, SwarmregError
from swarmreg.swarm.engine import SwarmEngine
from swarmreg.swarm.metainfo import Metainfo, build_metainfo
from tests.conftest import random_bytes


def engine(**settings: object) -> SwarmEngine:
    return SwarmEngine(SwarmConfig(listen=Address("127.0.0.1", 0), **settings))


def seed_file(directory: Path, data: bytes) -> Metainfo:
    directory.mkdir(parents=True, exist_ok=True)
    digest = Digest.of(data)
    (directory / digest.hex).write_bytes(data)
    return build_metainfo(directory / digest.hex, digest)


async def test_a_blob_moves_between_two_sessions(nursery: trio.Nursery, tmp_path: Path) -> None:
    seeder, leecher = engine(), engine()
    await nursery.start(seeder.run)
    await nursery.start(leecher.run)
    data = random_bytes(5 << 20)
    metainfo = seed_file(tmp_path / "seed", data)
    await seeder.add(metainfo, tmp_path / "seed", seed=True)
    torrent = await leecher.add(metainfo, tmp_path / "leech", namespace="ns")
    assert await leecher.add(metainfo, tmp_path / "leech") is torrent, "adding twice returns the torrent"
    torrent.connect([("127.0.0.1", seeder.address.port)])
    with trio.fail_after(30):
        await torrent.finished.wait()  # set by a pushed torrent_finished_alert
    assert torrent.have_count == metainfo.num_pieces
    pieces = [await leecher.read_piece(torrent, i) for i in range(metainfo.num_pieces)]
    assert b"".join(pieces) == data

    await leecher.move(torrent, tmp_path / "moved")
    assert (tmp_path / "moved" / metainfo.digest.hex).read_bytes() == data
    assert not (tmp_path / "leech" / metainfo.digest.hex).exists()

    stats = leecher.stats()
    assert stats["totals"]["downloaded"] >= len(data) and stats["torrents"][0]["complete"]
    await leecher.remove(torrent, delete_files=True)
    assert leecher.get(metainfo.info_hash) is None
    assert not (tmp_path / "moved" / metainfo.digest.hex).exists()
    seeder.close()
    leecher.close()


async def test_waiting_for_a_piece_fails_when_the_torrent_is_removed(nursery: trio.Nursery,
                                                                     tmp_path: Path) -> None:
    lonely = engine()
    await nursery.start(lonely.run)
    metainfo = seed_file(tmp_path / "elsewhere", random_bytes(100_000))
    torrent = await lonely.add(metainfo, tmp_path / "leech")

    async def remove_soon() -> None:
        await trio.sleep(0.2)
        await lonely.remove(torrent)

    nursery.start_soon(remove_soon)
    with pytest.raises(SwarmregError, match="removed"):
        with trio.fail_after(10):
            await torrent.wait_piece(0)
    lonely.close()


async def test_a_taken_port_fails_the_start(nursery: trio.Nursery) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = SwarmEngine(SwarmConfig(listen=Address("127.0.0.1", taken.getsockname()[1])))
        failures = []
        try:
            await nursery.start(busy.run)
        except* OSError as group:
            failures = [str(error) for error in group.exceptions]
    assert failures and "cannot listen" in failures[0]


async def test_rate_limits_apply_to_loopback_peers(nursery: trio.Nursery, tmp_path: Path) -> None:
    seeder, leecher = engine(upload_rate_limit=1 << 20), engine()
    await nursery.start(seeder.run)
    await nursery.start(leecher.run)
    metainfo = seed_file(tmp_path / "seed", random_bytes(4 << 20, seed=1))
    await seeder.add(metainfo, tmp_path / "seed", seed=True)
    torrent = await leecher.add(metainfo, tmp_path / "leech")
    torrent.connect([("127.0.0.1", seeder.address.port)])
    await trio.sleep(1.5)
    # At 1 MiB/s, 4 MiB cannot be here after 1.5 s; unlimited loopback moves it in well under that.
    assert torrent.have_count < metainfo.num_pieces
    seeder.close()
    leecher.close()



async def test_an_origin_seed_gets_its_upload_slots_and_a_leecher_its_milestones(nursery: trio.Nursery,
                                                                                 tmp_path: Path) -> None:
    seeder, leecher = engine(seed_upload_slots=3), engine()
    await nursery.start(seeder.run)
    await nursery.start(leecher.run)
    data = random_bytes(2 << 20)
    metainfo = seed_file(tmp_path / "seed", data)
    seed = await seeder.add(metainfo, tmp_path / "seed", seed=True)
    assert seed.handle.max_uploads() == 3
    torrent = await leecher.add(metainfo, tmp_path / "leech")
    assert torrent.handle.max_uploads() == (1 << 24) - 1, "a download: no limit of its own"
    torrent.connect([("127.0.0.1", seeder.address.port)])
    with trio.fail_after(30):
        await torrent.finished.wait()
    timeline = leecher.stats()["torrents"][0]["timeline"]
    assert 0 <= timeline["first_piece"] <= timeline["finished"], timeline
    seeder.close()
    leecher.close()


async def test_a_move_or_flush_of_a_removed_torrent_fails_instead_of_hanging(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    # Alerts of a removed torrent are not routed: a wait for one used to hang, and the
    # agent's shutdown with it.
    leecher = engine()
    await nursery.start(leecher.run)
    metainfo = seed_file(tmp_path / "seed", random_bytes(1 << 20, seed=3))
    failures: list[SwarmregError] = []

    async def waiting(call: Awaitable[None]) -> None:
        try:
            await call
        except SwarmregError as error:
            failures.append(error)

    for wait in ("move", "flush"):
        torrent = await leecher.add(metainfo, tmp_path / wait)
        failures.clear()
        with trio.fail_after(15):
            async with trio.open_nursery() as waiters:
                call = leecher.move(torrent, tmp_path / "elsewhere") if wait == "move" else leecher.flush(torrent)
                waiters.start_soon(waiting, call)
                await trio.sleep(0)  # the call is made; its alert is not handled yet
                await leecher.remove(torrent)
        assert failures and failures[0].code is UNAVAILABLE, wait
        with pytest.raises(SwarmregError):
            await leecher.flush(torrent)  # a failed torrent is not flushed
    leecher.close()



async def test_a_failed_move_names_no_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    """libtorrent's text of a failed move names the files (it is logged); the error says only why."""
    mover = engine()
    await nursery.start(mover.run)
    metainfo = seed_file(tmp_path / "seed", random_bytes(100_000))
    torrent = await mover.add(metainfo, tmp_path / "seed", seed=True)
    (tmp_path / "plain").write_bytes(b"not a directory")
    with pytest.raises(SwarmregError) as failed:
        await mover.move(torrent, tmp_path / "plain" / "blobs")
    assert failed.value.message == "cannot move storage: Not a directory"
    mover.close()


async def test_idle_complete_torrents_are_released_and_can_be_added_again(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    # 0: no sweep of its own; release_idle is called here.
    seeder, leecher = engine(idle_torrent_timeout=0), engine(idle_torrent_timeout=0)
    await nursery.start(seeder.run)
    await nursery.start(leecher.run)
    released: list[str] = []
    seeder.on_release.append(lambda torrent: released.append(torrent.info_hash))
    metainfo = seed_file(tmp_path / "seed", random_bytes(3 << 20))
    seeded = await seeder.add(metainfo, tmp_path / "seed", seed=True)
    missing = seed_file(tmp_path / "other", random_bytes(1 << 20, seed=3))
    waiting = await leecher.add(missing, tmp_path / "nobody-has-it")  # incomplete: never released
    torrent = await leecher.add(metainfo, tmp_path / "leech")
    torrent.connect([("127.0.0.1", seeder.address.port)])
    with trio.fail_after(30):
        await torrent.finished.wait()
    assert await seeder.release_idle(5) == 0 and await leecher.release_idle(5) == 0, "active just now"
    await trio.sleep(0.6)
    # Still connected to each other, but neither wants a piece: both are idle.
    assert torrent.handle.status().num_peers == 1
    assert await seeder.release_idle(0.5) == 1 and await leecher.release_idle(0.5) == 1
    assert released == [metainfo.info_hash] and seeded.error == "removed"
    assert seeder.get(metainfo.info_hash) is None and leecher.get(metainfo.info_hash) is None
    assert leecher.get(missing.info_hash) is waiting and waiting.error is None
    assert (tmp_path / "seed" / metainfo.digest.hex).exists(), "the file stays"
    again = await seeder.add(metainfo, tmp_path / "seed", seed=True)
    assert again is not seeded and again.finished.is_set()
    seeder.close()
    leecher.close()
