"""An agent pulling an upstream blob that its origin is still fetching streams it from the
origin as it arrives (a relay: there is no BitTorrent v2 torrent before the last byte), holds it
verified, then seeds it: the next agent gets it through the swarm, and the upstream served its
bytes once for the whole cluster."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.devcluster import make_dev_certs, tls_overrides
from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.upstream.lying import LyingUpstream

MiB = 1 << 20


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_an_agent_streams_a_blob_its_origin_still_fetches_then_seeds_it(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    data = random_bytes(4 * MiB + 99, seed=41)
    slow = LyingUpstream(data, "slow", seconds=5.0)
    await nursery.start(slow.serve)
    upstream = f"127.0.0.1:{slow.port}"
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", f'registries=[{{name = "{upstream}", scheme = "http", read_timeout = 5}}]'),
        ["origin", "tracker", "index", "proxy"])
    agents = [await start_daemon(nursery, make_config(
        tmp_path / name, f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
        f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"]) for name in ("one", "two")]
    path = f"/namespace/{upstream}%2Fx%2Fy/blobs/{slow.digest}"
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            sent_at_first_chunk = None
            body = bytearray()
            async with client.stream("GET", agents[0].url("agent") + path) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    if sent_at_first_chunk is None:
                        sent_at_first_chunk = slow.sent
                    body += chunk
            assert sent_at_first_chunk is not None and sent_at_first_chunk < len(data), \
                "the agent's client got bytes before the upstream had sent the whole blob"
            assert bytes(body) == data
            # The first agent holds the blob verified and seeds it, announced complete.
            assert blob_files(Path(agents[0].config.data_dir)) == {slow.digest.hex: len(data)}
            with trio.fail_after(30):
                while not [t for t in (await client.get(agents[0].url("agent") + "/stats")).json()["torrents"]
                           if t["digest"] == str(slow.digest) and t["complete"]]:
                    await trio.sleep(0.1)
            # The second agent gets it through the swarm (the origin and the first agent seed it).
            response = await client.get(agents[1].url("agent") + path)
            assert response.status_code == 200 and response.content == data
            [torrent] = (await client.get(agents[1].url("agent") + "/stats")).json()["torrents"]
            assert torrent["complete"]
        assert [m for m, target in slow.requests if target.endswith(str(slow.digest))].count("GET") == 1, \
            "one upstream GET for the cluster"
    finally:
        for agent in agents:
            await agent.stop()
        await herd.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_relay_of_a_wrong_upstream_body_is_cut_and_kept_nowhere(nursery: trio.Nursery,
                                                                       tmp_path: Path) -> None:
    data = random_bytes(3 * MiB + 7, seed=42)
    lying = LyingUpstream(data, "wrong", seconds=3.0)
    await nursery.start(lying.serve)
    upstream = f"127.0.0.1:{lying.port}"
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", f'registries=[{{name = "{upstream}", scheme = "http", read_timeout = 5}}]'),
        ["origin", "tracker", "index", "proxy"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
        f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"])
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            received = 0
            with pytest.raises(httpx.HTTPError):
                async with client.stream("GET", f"{agent.url('agent')}/namespace/{upstream}%2Fx%2Fy/blobs/"
                                                f"{lying.digest}") as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
            assert 0 < received < len(data)
        for daemon in (agent, herd):
            data_dir = Path(daemon.config.data_dir)
            assert blob_files(data_dir) == {}
            with trio.fail_after(10):  # the agent's relay ends (and drops its temp file) just after
                while list((data_dir / "tmp").iterdir()):
                    await trio.sleep(0.05)
    finally:
        await agent.stop()
        await herd.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_relay_on_a_tls_cluster_goes_over_https(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With [tls] the tracker's Relay names the origin's https URL, and the agent follows it with
    its cluster certificate (the origin asks for one), no secret configured."""
    certs = tmp_path / "certs"
    make_dev_certs(certs, {"herd": ("origin", "tracker", "index", "proxy"), "agent": ("agent",)})
    data = random_bytes(3 * MiB + 1, seed=43)
    slow = LyingUpstream(data, "slow", seconds=4.0)
    await nursery.start(slow.serve)
    upstream = f"127.0.0.1:{slow.port}"
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", *tls_overrides(certs, "herd"),
        f'registries=[{{name = "{upstream}", scheme = "http", read_timeout = 5}}]'),
        ["origin", "tracker", "index", "proxy"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", *tls_overrides(certs, "agent"), f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
        f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"])
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            sent_at_first_chunk = None
            body = bytearray()
            async with client.stream("GET", f"{agent.url('agent')}/namespace/{upstream}%2Fx%2Fy/blobs/"
                                            f"{slow.digest}") as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    if sent_at_first_chunk is None:
                        sent_at_first_chunk = slow.sent
                    body += chunk
            assert sent_at_first_chunk is not None and sent_at_first_chunk < len(data)
            assert bytes(body) == data
        assert blob_files(Path(agent.config.data_dir)) == {slow.digest.hex: len(data)}
    finally:
        await agent.stop()
        await herd.stop()
