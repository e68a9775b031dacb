"""A ring's members and their health: live ones first in each key's order, a member down for a
backoff that grows, probes that find members down and up again, and DNS names looked up for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio_websocket import HandshakeError

from swarmreg.cluster.probes import http_probe, websocket_probe
from swarmreg.cluster.rendezvous import rank
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from tests.conftest import free_port, make_config, start_daemon

A, B, C = Address("127.0.0.1", 1), Address("127.0.0.1", 2), Address("127.0.0.1", 3)


async def test_live_members_come_first_in_ring_order_and_owners_are_capped() -> None:
    ring = Ring("origin", (A, B, C))
    key = "sha256:" + "ab" * 32
    ranked = rank(key, [A, B, C])
    assert ring.order(key) == ranked
    assert ring.owners(key, 2) == ranked[:2]
    assert ring.owners(key, 5) == ranked, "capped by the ring's size"
    ring.mark_down(ranked[0], "test")
    assert ring.order(key) == [ranked[1], ranked[2], ranked[0]]
    assert ring.owners(key, 2) == [ranked[1], ranked[0]], "a down owner stays an owner, last"
    ring.mark_up(ranked[0])
    assert ring.order(key) == ranked


async def test_a_member_marked_down_is_skipped_for_a_growing_backoff(autojump_clock: trio.abc.Clock) -> None:
    ring = Ring("index", (A, B), max_backoff=3.0)
    version = ring.version
    ring.mark_down(A, "test")
    assert ring.version > version and not ring.live(A)
    await trio.sleep(1.01)
    assert ring.live(A), "one second after the first failure"
    ring.mark_down(A, "again")
    await trio.sleep(1.5)
    assert not ring.live(A), "two seconds after the second"
    await trio.sleep(0.6)
    ring.mark_down(A, "3")
    ring.mark_down(A, "4")
    await trio.sleep(2.9)
    assert not ring.live(A)
    await trio.sleep(0.2)
    assert ring.live(A), "never longer than max_backoff"


async def test_a_one_member_ring_always_offers_its_member() -> None:
    ring = Ring.static("tracker", A)
    ring.mark_down(A, "test")
    assert ring.order() == [A]


async def test_probes_find_an_origin_down_and_up_again(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path / "o", f"origin.listen=127.0.0.1:{port}")
    origin = await start_daemon(nursery, config, ["origin"])
    member = Address("127.0.0.1", port)
    ring = Ring("origin", (member, A), probe=http_probe(None), health_interval=0.1)
    await nursery.start(ring.run)
    version = ring.version
    while ring.live(A):  # A has nothing listening
        version = await ring.wait_changed(version)
    assert ring.live(member)
    await origin.stop()
    while ring.live(member):
        version = await ring.wait_changed(version)
    comebacks = ring.comebacks.get(member, 0)
    await start_daemon(nursery, config, ["origin"])
    while not ring.live(member):
        version = await ring.wait_changed(version)
    assert ring.comebacks[member] == comebacks + 1


async def test_a_restart_between_two_probes_is_a_comeback(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The member came back maybe with an empty disk: its health answer names a new instance."""
    port = free_port()
    config = make_config(tmp_path / "o", f"origin.listen=127.0.0.1:{port}")
    origin = await start_daemon(nursery, config, ["origin"])
    member = Address("127.0.0.1", port)
    ring = Ring("origin", (member,), probe=http_probe(None), health_interval=3600)
    await ring.check(member)  # the first answer: its instance is known now
    await origin.stop()
    await start_daemon(nursery, config, ["origin"])
    version = ring.version
    await ring.check(member)
    assert ring.comebacks == {member: 1} and ring.version > version
    await ring.check(member)
    assert ring.comebacks == {member: 1}, "the same instance again"


async def test_the_tracker_answers_its_websocket_health_check(nursery: trio.Nursery, tmp_path: Path) -> None:
    running = await start_daemon(nursery, make_config(tmp_path / "t"), ["origin", "tracker"])
    tracker = Address.parse(running.ready["roles"]["tracker"]["ws"])
    await websocket_probe(None)(tracker)
    with pytest.raises(HandshakeError):  # nothing listens there
        await websocket_probe(None)(Address("127.0.0.1", free_port()))


async def test_a_dns_name_stands_for_its_records(nursery: trio.Nursery) -> None:
    """localhost resolves to 127.0.0.1 on these machines (through the system resolver, as any
    name would); the members are its records at the name's port."""
    ring = Ring("origin", Address("localhost", 15002), resolve_interval=0.05)
    assert ring.members == ()
    await nursery.start(ring.run)
    assert Address("127.0.0.1", 15002) in ring.members
    assert all(m.port == 15002 and m.host in ("127.0.0.1", "::1") for m in ring.members)


async def test_a_failed_lookup_keeps_the_members(nursery: trio.Nursery) -> None:
    ring = Ring("origin", Address("no-such-host.invalid", 15002))
    ring.members = (A,)
    await ring.resolve()
    assert ring.members == (A,)
