"""An agent of a ring of two trackers (real daemons, ``[cluster] trackers``): it uses the ring's
first live tracker, and when that one stops during a download it moves to the next, announces
itself there, and the download completes; later downloads go through the new tracker."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from swarmreg.tracker.client import list_agents
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
