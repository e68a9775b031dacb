"""A real swarm: a herd (origin + tracker) and agents, each a separate process on loopback.

Rate limits stand in for a network: the origin's upload is capped below what the
agents can take, as an origin's NIC is in a fleet, so the agents must feed each other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.devcluster import DaemonProcess
from tests.conftest import blob_files, free_port, random_bytes
from tests.origin.helpers import blob_path, upload_blob

pytestmark = pytest.mark.slow
NS = "library/swarm"
MiB = 1 << 20


async def start_herd(spawn, *overrides: str, name: str = "herd") -> DaemonProcess:
    return await spawn(name, ["origin", "tracker"], "store.fsync=false", *overrides)


async def start_agent(spawn, tracker: str, name: str, *overrides: str, **kwargs) -> DaemonProcess:
    return await spawn(name, ["agent"], f"agent.tracker={tracker}", "store.fsync=false", *overrides, **kwargs)


async def upload(origin: DaemonProcess, data: bytes) -> str:
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=120) as client:
        return await upload_blob(client, NS, data, chunk=16 * MiB)


async def pull(agent: DaemonProcess, digest: str) -> str:
    """GET the blob from the agent; returns the sha256 digest of what came back."""
    hasher = hashlib.sha256()
    async with httpx.AsyncClient(timeout=300) as client:
        async with client.stream("GET", agent.url("agent") + blob_path(NS, digest)) as response:
            assert response.status_code == 200, await response.aread()
            async for chunk in response.aiter_bytes():
                hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


async def stats(process: DaemonProcess, role: str) -> dict:
    async with httpx.AsyncClient(timeout=30) as client:
        return (await client.get(process.url(role) + "/stats")).json()


async def test_agents_feed_each_other(spawn) -> None:
    herd = await start_herd(spawn, "swarm.upload_rate_limit=16MiB")
    tracker = herd.address("tracker", "ws")
    agents = [await start_agent(spawn, tracker, f"agent{i}") for i in range(4)]
    data = random_bytes(64 * MiB)
    digest = await upload(herd, data)
    results = {}

    async def one(agent: DaemonProcess) -> None:
        results[agent.name] = await pull(agent, digest)

    async with trio.open_nursery() as nursery:
        for agent in agents:
            nursery.start_soon(one, agent)
    assert set(results.values()) == {digest} and len(results) == 4
    for agent in agents:
        assert blob_files(agent.data_dir) == {digest.removeprefix("sha256:"): len(data)}
    origin_sent = (await stats(herd, "origin"))["totals"]["uploaded"]
    from_agents = [(await stats(agent, "agent"))["totals"]["downloaded_from"]["agent"] for agent in agents]
    assert origin_sent < 2 * len(data), f"origin sent {origin_sent / len(data):.2f}x the blob"
    assert sum(from_agents) > len(data), from_agents


async def test_an_agent_killed_mid_download_resumes_from_its_pieces(spawn, tmp_path: Path) -> None:
    herd = await start_herd(spawn, "swarm.upload_rate_limit=8MiB")
    data_dir = tmp_path / "agent-data"
    agent = await start_agent(spawn, herd.address("tracker", "ws"), "agent", data_dir=data_dir)
    data = random_bytes(48 * MiB, seed=1)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(timeout=300) as client:
        async with client.stream("GET", agent.url("agent") + blob_path(NS, digest)):
            # Kill it once about half the pieces are in (the stream may lag the download).
            had = 0.0
            with trio.fail_after(60):
                while had < 0.45:
                    await trio.sleep(0.05)
                    torrents = (await stats(agent, "agent"))["torrents"]
                    had = torrents[0]["pieces_done"] / torrents[0]["pieces"] if torrents else 0.0
            agent.kill()
            await agent.wait()
    assert 0.4 < had < 1, had
    again = await start_agent(spawn, herd.address("tracker", "ws"), "agent-again", data_dir=data_dir)
    assert await pull(again, digest) == digest
    [torrent] = (await stats(again, "agent"))["torrents"]
    # Only what was missing came over the wire after the restart, give or take what SIGKILL caught
    # in libtorrent's write queue (the session's max_queued_disk_bytes, 8 MiB) and a piece in flight.
    assert torrent["downloaded"] <= (1 - had) * len(data) + 9 * MiB, (torrent["downloaded"], had)


async def test_downloads_survive_a_tracker_restart(spawn, tmp_path: Path) -> None:
    origin = await spawn("origin", ["origin"], "store.fsync=false", "swarm.upload_rate_limit=8MiB")
    port = free_port()
    tracker_args = (f"tracker.listen=127.0.0.1:{port}", f"tracker.origins=['{origin.address('origin')}']")
    tracker = await spawn("tracker", ["tracker"], *tracker_args)
    agents = [await start_agent(spawn, f"127.0.0.1:{port}", f"agent{i}") for i in range(2)]
    data = random_bytes(40 * MiB, seed=2)
    digest = await upload(origin, data)
    results = []

    async def one(agent: DaemonProcess) -> None:
        results.append(await pull(agent, digest))

    async with trio.open_nursery() as nursery:
        for agent in agents:
            nursery.start_soon(one, agent)
        await trio.sleep(1.5)
        tracker.kill()
        await tracker.wait()
        await trio.sleep(1)
        await spawn("tracker-again", ["tracker"], *tracker_args)
        # A newcomer after the restart still finds the swarm.
        late = await start_agent(spawn, f"127.0.0.1:{port}", "late")
        nursery.start_soon(one, late)
    assert results == [digest] * 3
    for name in ("agent0", "agent1"):
        log = (tmp_path / f"{name}.log").read_text()
        assert log.count("connected to the tracker") >= 2, f"{name} did not reconnect"


async def test_a_peer_serving_corrupt_pieces_is_banned_and_the_download_completes(spawn) -> None:
    herd = await start_herd(spawn, "swarm.upload_rate_limit=2MiB")
    tracker = herd.address("tracker", "ws")
    liar = await start_agent(spawn, tracker, "liar")
    data = random_bytes(8 * MiB, seed=3)
    digest = await upload(herd, data)
    assert await pull(liar, digest) == digest
    # Rot every piece of the liar's copy in place: it keeps serving from that file.
    hex_ = digest.removeprefix("sha256:")
    path = liar.data_dir / "blobs" / "sha256" / hex_[:2] / hex_
    with trio.fail_after(10):  # the response ends once verified; the move into the store follows
        while not path.exists():
            await trio.sleep(0.05)
    with open(path, "r+b") as file:
        for offset in range(0, len(data), 128 << 10):
            file.seek(offset + 100)
            file.write(b"\xde\xad\xbe\xef" * 16)
    victims = [await start_agent(spawn, tracker, f"victim{i}") for i in range(2)]
    results = []

    async def one(agent: DaemonProcess) -> None:
        results.append(await pull(agent, digest))

    async with trio.open_nursery() as nursery:
        for agent in victims:
            nursery.start_soon(one, agent)
    assert results == [digest] * 2
    seen = [(await stats(v, "agent"))["torrents"][0] for v in victims]
    assert sum(t["hash_failures"] for t in seen) > 0, seen
    assert sum(t["banned_peers"] for t in seen) > 0, seen
