"""An agent's download is held only once verified and durable, as every blob the origin commits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
import trio

from tests.agent.test_agent_api import NS, start_agent, start_herd, upload
from tests.conftest import random_bytes
from tests.origin.helpers import blob_path


async def test_a_swarm_download_is_fsynced_before_it_is_held(nursery: trio.Nursery, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(3 << 20, seed=21)  # over inline_max: it comes through a torrent
    digest = await upload(herd, data)
    target = Path(agent.config.data_dir) / "blobs" / "sha256" / digest[7:9] / digest[7:]
    # Every fsync of this process: what it synced, and whether the blob was held then.
    synced: list[tuple[tuple[int, int], bool, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append(((st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    def key(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_dev, st.st_ino

    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert (await client.get(blob_path(NS, digest))).content == data
        # The last piece went out only once the blob was held (and durable).
        assert target.exists()
        stats = (await client.get("/stats")).json()
    assert [t["digest"] for t in stats["torrents"]] == [digest]

    files = [held for what, is_dir, held in synced if what == key(target) and not is_dir]
    assert files == [False], "the file is fsynced once, before it is under its digest"
    assert (key(target.parent), True, True) in synced, "the shard is fsynced with the blob in it"
    assert (key(target.parent.parent), True, False) in synced, "the new shard is fsynced in its parent"


async def test_without_store_fsync_a_download_is_not_fsynced(nursery: trio.Nursery, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent", "store.fsync=false")
    data = random_bytes(3 << 20, seed=22)
    digest = await upload(herd, data)
    agent_root = Path(agent.config.data_dir).resolve()
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert (await client.get(blob_path(NS, digest))).content == data
    assert not [path for path in synced if path.startswith(str(agent_root))]
