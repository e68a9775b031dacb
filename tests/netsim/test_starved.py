"""An agent whose first dials all fail still completes near the others (issue 14).

libtorrent writes a peer off after three failed dials (max_failcount); with min_reconnect_time
2 s they come at about 0, 4 and 10 s. So an agent that refuses every peer-wire connection, in and
out, for its first 14 s has written off every peer, and every peer has written it off. It
recovers only because the tracker notices the download makes no progress and hands its peers
over again as tracker peers (which lowers their failcount), and has the peers furthest along dial it.
"""

from __future__ import annotations

from pathlib import Path

import trio

from netsim.runner import run_scenario
from netsim.scenario import Fault, Links, Scenario
from swarmreg.config import MiB
from tests.netsim.helpers import needs_netns

REFUSED_FOR = 14.0


@needs_netns
def test_an_agent_whose_first_dials_all_fail_completes_near_the_others(tmp_path: Path) -> None:
    scenario = Scenario("refused", agents=6, blob_size=32 * MiB,
                        links=Links(origin_up=2 * MiB, agent_up=1 * MiB, agent_down=8 * MiB),
                        faults=(Fault(0.0, "agent-0", "refuse", REFUSED_FOR),), timeout=120)
    figures = trio.run(run_scenario, scenario, tmp_path, "netns")
    assert figures["completed"] == 6, figures["failed"]
    refused, *others = figures["completion_by_agent"]
    # T* = 6 x 32 / (2 + 6 x 1) = 24 s. Starved, it would wait out its 60 s stall timeout and fail.
    assert refused <= max(others) + 10, (refused, others)
