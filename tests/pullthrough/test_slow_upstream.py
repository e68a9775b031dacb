"""A slow but live upstream (issue 12, point 4: never a hang, but never a premature failure): a
blob that takes longer to arrive than any one request's timeout between the nodes (the tracker
asked its origin with a 30 s read timeout) still reaches an agent, through the tracker and the swarm."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import make_config, random_bytes, start_daemon
from tests.upstream.lying import LyingUpstream

SECONDS = 40.0  # past the tracker's 30 s read timeout towards its origin


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_blob_slower_than_every_hop_timeout_still_arrives(nursery: trio.Nursery, tmp_path: Path):
    data = random_bytes(2 << 20, seed=21)
    slow = LyingUpstream(data, "slow", seconds=SECONDS)
    await nursery.start(slow.serve)
    upstream = f"127.0.0.1:{slow.port}"
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", f'registries=[{{name = "{upstream}", scheme = "http", read_timeout = 5}}]'),
        ["origin", "tracker", "index", "proxy"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
        f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"])
    try:
        async with httpx.AsyncClient(timeout=SECONDS * 3) as client:
            # The agent's blob API (Kraken's): through the tracker's metainfo, then the peer wire.
            response = await client.get(f"{agent.url('agent')}/namespace/{upstream}%2Fx%2Fy/blobs/{slow.digest}")
            assert response.status_code == 200, response.text
            assert response.content == data
            # And through the proxy, which reads from the origin.
            response = await client.get(f"{herd.url('proxy')}/v2/{upstream}/x/y/blobs/{slow.digest}")
            assert response.status_code == 200 and response.content == data
        assert [method for method, target in slow.requests if target.endswith(str(slow.digest))].count("GET") == 1
    finally:
        await agent.stop()
        await herd.stop()
