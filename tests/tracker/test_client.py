"""The peer side of the tracker channel, against an address where no tracker answers."""

from __future__ import annotations

import pytest
import trio

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import Announcement, TrackerClient
from tests.conftest import free_port


async def test_requests_waiting_for_a_connection_fail_at_once_when_the_client_stops(nursery: trio.Nursery) -> None:
    client = TrackerClient(Address("127.0.0.1", free_port()), port=lambda: 1, peer_id="ab" * 10,
                           announcements=list, on_peers=lambda info_hash, peers: None, attempts=5)
    stop = trio.Event()
    await nursery.start(client.run, stop)
    failures: list[SwarmregError] = []

    async def announce() -> None:
        with pytest.raises(SwarmregError) as failed:
            await client.announce(Announcement("ab" * 32, "sha256:" + "cd" * 32, "ns", True))
        failures.append(failed.value)

    nursery.start_soon(announce)
    await trio.sleep(0.2)  # the request waits for a connection that never comes
    stop.set()
    # Without the stop it would wait 2 + 4 + 8 + 16 + 32 s for its five attempts: the bound
    # below is far from that, and the message says why it failed.
    with trio.fail_after(20):
        while not failures:
            await trio.sleep(0.01)
    assert failures[0].code.code == "UNAVAILABLE" and "stopped" in failures[0].message
