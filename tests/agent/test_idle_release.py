"""Idle torrents released (swarm.idle_torrent_timeout) while something still uses them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import trio

from tests.agent.test_agent_api import NS, start_agent, start_herd, upload
from tests.conftest import RunningDaemon, random_bytes
from tests.origin.helpers import blob_path

IDLE = ("swarm.idle_torrent_timeout=1", "swarm.idle_peer_timeout=1")


async def torrents(daemon: RunningDaemon, role: str) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        return [t["digest"] for t in (await client.get(daemon.url(role) + "/stats")).json()["torrents"]]


async def test_a_slow_reader_of_a_swarm_download_gets_the_whole_blob_after_its_torrent_is_released(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # The response streams from the download (libtorrent reads) and the client pauses past the
    # idle timeout once the download is done: the release must not cut the body short.
    herd = await start_herd(nursery, tmp_path, *IDLE)
    agent = await start_agent(nursery, tmp_path, herd, "agent", *IDLE)
    data = random_bytes(48 << 20, seed=5)
    digest = await upload(herd, data)
    hasher = hashlib.sha256()
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", agent.url("agent") + blob_path(NS, digest)) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            hasher.update(await chunks.__anext__())
            with trio.fail_after(30):  # the download completes, then its torrent leaves the session
                while await torrents(agent, "agent"):
                    await trio.sleep(0.2)
            with trio.fail_after(60):
                async for chunk in chunks:
                    hasher.update(chunk)
    assert "sha256:" + hasher.hexdigest() == digest


async def test_a_new_agent_gets_a_blob_the_origin_released_without_waiting_out_a_reconnect(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # The tracker's announce asks the origin to seed again; a reply sent before the origin
    # re-added the torrent had the agent connect, be refused, and retry only 30 s later.
    herd = await start_herd(nursery, tmp_path, *IDLE, "tracker.metainfo_refresh=0.5")
    first = await start_agent(nursery, tmp_path, herd, "first", *IDLE)
    data = random_bytes(6 << 20, seed=11)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(first.url("agent") + blob_path(NS, digest))).content == data
        with trio.fail_after(20):
            while await torrents(first, "agent") or await torrents(herd, "origin"):
                await trio.sleep(0.2)
        second = await start_agent(nursery, tmp_path, herd, "second", *IDLE)
        with trio.fail_after(10):
            assert (await client.get(second.url("agent") + blob_path(NS, digest))).content == data
    assert await torrents(herd, "origin") == [digest]


async def test_torrents_with_peers_still_downloading_are_not_released(nursery: trio.Nursery,
                                                                      tmp_path: Path) -> None:
    # The origin sends slowly (one upload slot): the agent waiting its turn wants pieces all along.
    herd = await start_herd(nursery, tmp_path, *IDLE, "swarm.upload_rate_limit=3000000")
    agents = [await start_agent(nursery, tmp_path, herd, name, *IDLE) for name in ("a", "b")]
    data = random_bytes(8 << 20, seed=9)
    digest = await upload(herd, data)
    bodies: dict[str, bytes] = {}

    async def pull(agent: RunningDaemon) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            bodies[agent.config.data_dir] = (await client.get(agent.url("agent") + blob_path(NS, digest))).content

    with trio.fail_after(60):
        async with trio.open_nursery() as pulls:
            for agent in agents:
                pulls.start_soon(pull, agent)
    assert [hashlib.sha256(body).hexdigest() for body in bodies.values()] == [digest.removeprefix("sha256:")] * 2
