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
