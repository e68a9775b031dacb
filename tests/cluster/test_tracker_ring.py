"""An agent of a ring of two trackers (real daemons, ``[cluster] trackers``): it uses the ring's
first live tracker, and when that one stops during a download it moves to the next, announces
itself there, and the download completes; later downloads go through the new tracker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import TrackerClient, list_agents
from tests.conftest import make_config, random_bytes, start_daemon
from tests.origin.helpers import blob_path, upload_blob

NS = "ring"


async def test_an_agent_moves_to_the_next_tracker_when_its_own_stops(nursery: trio.Nursery, tmp_path: Path) -> None:
    # About 2 s for the first blob: time to stop the tracker in the middle of it.
    origin = await start_daemon(nursery, make_config(tmp_path / "origin", "swarm.upload_rate_limit=4MiB"),
                                ["origin"])
    origin_address = origin.ready["roles"]["origin"]["http"]
    trackers = {}
    for n in range(2):
        config = make_config(tmp_path / f"tracker{n}", f"tracker.origins=['{origin_address}']")
        tracker = await start_daemon(nursery, config, ["tracker"])
        trackers[Address.parse(tracker.ready["roles"]["tracker"]["ws"])] = tracker
    first, second = rank("", list(trackers))
    members = ", ".join(f"'{address}'" for address in trackers)
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"cluster.trackers=[{members}]",
                                                    "cluster.health_interval=0.5"), ["agent"])
    agent_port = Address.parse(agent.ready["roles"]["agent"]["http"]).port
    big, small = random_bytes(8 << 20, seed=1), random_bytes(3 << 20, seed=2)
    async with httpx.AsyncClient(base_url=f"http://{origin_address}", timeout=60) as client:
        digests = [await upload_blob(client, NS, data, chunk=8 << 20) for data in (big, small)]

    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        async with client.stream("GET", blob_path(NS, digests[0])) as response:
            assert response.status_code == 200
            chunks = response.aiter_bytes()
            received = [await anext(chunks)]  # the swarm is under way, through the first tracker
            assert [a.port for a in await list_agents(first)] == [agent_port]
            await trackers[first].stop()
            received += [chunk async for chunk in chunks]
        assert b"".join(received) == big

        # The agent told the next tracker about itself (and what it holds) when it moved there.
        with trio.fail_after(10):
            while [a.port for a in await list_agents(second)] != [agent_port]:
                await trio.sleep(0.05)
        response = await client.get(blob_path(NS, digests[1]))
        assert response.status_code == 200 and response.content == small


async def test_requests_on_a_killed_trackers_connection_go_to_the_next(nursery: trio.Nursery, tmp_path: Path,
                                                                       spawn: Any) -> None:
    """SIGKILL: requests sent on the connection before the client noticed it died wait for the
    next tracker (they used up their attempts on the dead connection within a millisecond)."""
    origin = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    origin_address = origin.ready["roles"]["origin"]["http"]
    trackers = {}
    for n in range(2):
        tracker = await spawn(f"tracker{n}", ["tracker"], f"tracker.origins=['{origin_address}']")
        trackers[Address.parse(tracker.address("tracker", "ws"))] = tracker
    first = rank("", list(trackers))[0]
    async with httpx.AsyncClient(base_url=f"http://{origin_address}", timeout=60) as client:
        digest = await upload_blob(client, NS, random_bytes(100_000, seed=3))
    tracker_client = TrackerClient(Ring("tracker", list(trackers)), port=lambda: 7000, peer_id="1" * 20,
                                   announcements=list, on_peers=lambda *_: None)
    await nursery.start(tracker_client.run, trio.Event())
    failures: list[str] = []
    asked = 0

    async def ask_until(deadline: float) -> None:
        nonlocal asked
        while trio.current_time() < deadline:
            try:
                await tracker_client.metainfo(NS, digest)
                asked += 1
            except SwarmregError as error:
                failures.append(error.message)

    await tracker_client.metainfo(NS, digest)  # connected, the metainfo cached at the first
    async with trio.open_nursery() as askers:
        deadline = trio.current_time() + 3
        for _ in range(16):
            askers.start_soon(ask_until, deadline)
        await trio.sleep(0.5)
        trackers[first].kill()
    assert not failures, failures
    assert asked > 100 and tracker_client.address != first
