"""The peer store's semantics, one suite for both stores: in memory, and in a real Redis."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from swarmreg.errors import PEER_ID_TAKEN, SwarmregError
from swarmreg.tracker.peers import PeerStore
from swarmreg.tracker.store import MemoryStore, Store
from swarmreg.tracker.wire import Peer

IH = "ab" * 32
OTHER = "cd" * 32
Make = Callable[..., Store]


def peer(n: int, *, complete: bool = False, origin: bool = False) -> Peer:
    return Peer(f"{n:020x}", "10.0.0.1", 1000 + n, complete, origin)


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Makes stores of the kind the test is run for: ``make(ttl=60, max_peers=50, ...)``."""
    stores: list[Store] = []

    def build(ttl: float = 60, max_peers: int = 50, stall_after: float = 4.0,
              rng: random.Random | None = None) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(PeerStore(ttl=ttl, max_peers=max_peers, stall_after=stall_after, rng=rng))
        else:
            from swarmreg.tracker.redis_store import RedisStore
            server = request.getfixturevalue("redis_server")
            store = RedisStore(server.url, ttl=ttl, max_peers=max_peers, stall_after=stall_after, rng=rng,
                               prefix=f"test{len(stores)}:")
        stores.append(store)
        return store

    yield build
    for store in stores:
        await store.aclose()


async def ids(store: Store, info_hash: str = IH, now: float = 0, **kwargs: Any) -> list[str]:
    return [p.peer_id for p in await store.peers_for(info_hash, now=now, **kwargs)]


async def test_seeds_and_origins_come_first_and_the_announcer_is_left_out(make: Make) -> None:
    store = make(rng=random.Random(1))
    await store.announce(IH, peer(0, origin=True, complete=True), owner="origin:o", now=0)
    for n in range(1, 6):
        await store.announce(IH, peer(n), owner=f"c{n}", now=0)
    await store.announce(IH, peer(6, complete=True), owner="c6", now=0)
    peers, news = await store.announce(IH, peer(7), owner="c7", now=0)
    assert news
    assert {p.peer_id for p in peers[:2]} == {peer(0).peer_id, peer(6).peer_id}
    assert peer(7).peer_id not in {p.peer_id for p in peers}
    assert len(peers) == 7
    assert await store.count() == 8


async def test_at_most_max_peers(make: Make) -> None:
    store = make(max_peers=3)
    for n in range(10):
        await store.announce(IH, peer(n), owner=f"c{n}", now=0)
    assert len(await store.peers_for(IH, now=0)) == 3
    peers, _ = await store.announce(IH, peer(10), owner="c10", now=0)
    assert len(peers) == 3


async def test_re_announcing_is_news_only_when_something_changed(make: Make) -> None:
    store = make()
    assert (await store.announce(IH, peer(1), owner="c", now=0))[1]
    assert not (await store.announce(IH, peer(1), owner="c", now=1))[1]
    assert (await store.announce(IH, peer(1, complete=True), owner="c", now=2))[1]


async def test_silent_peers_expire_but_origins_stay(make: Make) -> None:
    store = make(ttl=10)
    await store.announce(IH, peer(0, origin=True, complete=True), owner="origin:o", now=0)
    await store.announce(IH, peer(1), owner="c1", now=0)
    await store.announce(IH, peer(2), owner="c2", now=8)
    assert set(await ids(store, now=11)) == {peer(0).peer_id, peer(2).peer_id}, "expired: not handed out"
    assert await store.expire_entries(now=11) == [(IH, "c1")]
    assert await store.expire_entries(now=11) == []
    assert await store.count() == 2
    # Announcing again renews: nothing expires then.
    await store.announce(IH, peer(2), owner="c2", now=15)
    assert await store.expire_entries(now=20) == []
    assert await store.expire_entries(now=10_000) == [(IH, "c2")]
    assert await ids(store, now=10_000) == [peer(0).peer_id]
    # The expired connection keeps its peer id, and announces it again.
    await store.announce(IH, peer(1), owner="c1", now=10_001)
    assert await store.holder(peer(1).peer_id) == "c1"


async def test_a_closed_connection_takes_its_peers_with_it(make: Make) -> None:
    store = make()
    await store.announce(IH, peer(1), owner="gone", now=0)
    await store.announce(OTHER, peer(1), owner="gone", now=0)
    await store.announce(IH, peer(2), owner="stays", now=0)
    assert await store.drop_owner("gone") == 2
    assert await ids(store) == [peer(2).peer_id]
    assert await store.peers_for(OTHER, now=0) == []
    assert await store.count() == 1
    assert await store.drop_owner("gone") == 0
    assert await store.expire_entries(now=10_000) == [(IH, "stays")], "no expiry left of dropped entries"


async def test_a_peer_id_is_free_again_once_its_connection_closed(make: Make) -> None:
    store = make()
    await store.announce(IH, peer(1), owner="old", now=0)
    await store.drop_owner("old")
    await store.announce(IH, peer(1), owner="new", now=1)
    assert await store.holder(peer(1).peer_id) == "new"
    assert len(await store.peers_for(IH, now=1)) == 1


async def test_leave(make: Make) -> None:
    store = make()
    await store.announce(IH, peer(1), owner="c", now=0)
    await store.announce(OTHER, peer(1), owner="c", now=0)
    await store.leave(IH, "c")
    assert await store.peers_for(IH, now=0) == [] and await store.count() == 1
    assert await store.holder(peer(1).peer_id) == "c", "leaving a torrent keeps the connection's peer id"
    await store.leave(IH, "c")
    assert await ids(store, OTHER) == [peer(1).peer_id]


async def refused(store: Store, info_hash: str, p: Peer, owner: str) -> None:
    with pytest.raises(SwarmregError) as error:
        await store.announce(info_hash, p, owner=owner, now=5)
    assert error.value.code is PEER_ID_TAKEN


async def test_another_connections_peer_id_is_refused_in_every_torrent(make: Make) -> None:
    store = make()
    await store.announce(IH, peer(1), owner="first", now=0)
    await refused(store, IH, Peer(peer(1).peer_id, "10.0.0.66", 6666, complete=True), "impostor")
    await refused(store, OTHER, peer(1), "impostor")
    # Nothing changed: the first connection's entry stays, and its leaving still works.
    assert await store.peers_for(IH, now=5) == [peer(1)] and await store.peers_for(OTHER, now=5) == []
    await store.drop_owner("impostor")
    assert await store.peers_for(IH, now=5) == [peer(1)]
    await store.leave(IH, "impostor")
    assert await store.peers_for(IH, now=5) == [peer(1)]
    assert await store.holder(peer(1).peer_id) == "first"


async def test_a_connection_is_one_peer(make: Make) -> None:
    store = make()
    await store.announce(IH, peer(1), owner="c", now=0)
    await store.announce(OTHER, peer(1, complete=True), owner="c", now=0)  # the same id: fine
    await refused(store, IH, peer(2), "c")
    assert await store.peers_for(IH, now=5) == [peer(1)] and await store.holder(peer(2).peer_id) is None


async def test_an_origins_peer_id_cannot_be_announced_replaced_or_removed_by_a_connection(make: Make) -> None:
    store = make()
    origin = peer(0, origin=True, complete=True)
    await store.announce(IH, origin, owner="origin:o:1", now=0)
    await refused(store, IH, peer(0), "impostor")
    await refused(store, OTHER, peer(0), "impostor")  # nor in a torrent the origin is not recorded in
    await store.leave(IH, "impostor")
    await store.drop_owner("impostor")
    assert await store.expire_entries(now=10_000) == []
    assert await store.peers_for(IH, now=10_000) == [origin] and await store.peers_for(OTHER, now=0) == []
    assert await store.is_origin(IH, origin)
    assert not await store.is_origin(IH, Peer(origin.peer_id, "10.0.0.9", origin.port))
    assert not await store.is_origin(OTHER, origin)


async def test_an_origin_takes_its_peer_id_back_from_a_connection(make: Make) -> None:
    """A connection that learnt a restarted origin's new id before the tracker did loses it."""
    store = make()
    await store.announce(IH, peer(0), owner="impostor", now=0)
    await store.announce(OTHER, peer(0), owner="impostor", now=0)
    origin = peer(0, origin=True, complete=True)
    await store.announce(IH, origin, owner="origin:o:1", now=1)
    assert await store.peers_for(IH, now=1) == [origin] and await store.peers_for(OTHER, now=1) == []
    assert await store.holder(peer(0).peer_id) is None
    await refused(store, OTHER, peer(0), "impostor")
    await store.drop_owner("impostor")
    assert await store.peers_for(IH, now=1) == [origin]


async def test_an_owner_has_one_peer_per_torrent(make: Make) -> None:
    """A restarted origin (new peer id, same address) replaces its old entry."""
    store = make()
    await store.announce(IH, peer(1, origin=True, complete=True), owner="origin:o:1", now=0)
    await store.announce(IH, peer(2, origin=True, complete=True), owner="origin:o:1", now=1)
    assert await ids(store, now=1) == [peer(2).peer_id]
    # The old id is no origin's any more: a connection may have it.
    await store.announce(OTHER, peer(1), owner="c", now=2)


async def test_forget_takes_only_the_owners_entries(make: Make) -> None:
    store = make()
    origin = Peer("0" * 20, "10.0.0.1", 1000, True, True)
    await store.announce(IH, origin, owner="origin:10.0.0.1:8080", now=0)
    await store.announce(IH, Peer("1" * 20, "10.0.0.2", 1001), owner="connection", now=0)
    assert await store.forget(IH, {"origin:10.0.0.1:8080", "origin:elsewhere"}) == 1
    assert await ids(store) == ["1" * 20]
    assert await store.forget(IH, {"origin:10.0.0.1:8080"}) == 0
    # The forgotten origin's id is free: the origin is recorded anew when it answers again.
    await store.announce(IH, origin, owner="origin:10.0.0.1:8080", now=1)
    assert set(await ids(store, now=1)) == {"0" * 20, "1" * 20}


async def test_a_download_whose_progress_stops_is_rescued_by_the_peers_furthest_along(make: Make) -> None:
    store = make(stall_after=4)
    await store.announce(IH, peer(0, origin=True, complete=True), owner="origin:o", now=0)
    await store.announce(IH, peer(1, complete=True), owner="seed", now=0)
    for n, progress in ((2, 10), (3, 40), (4, 0)):
        await store.announce(IH, peer(n), owner=f"c{n}", now=0, progress=progress)
    await store.announce(IH, peer(5), owner="stuck", now=0, progress=5)
    # Progress that grows, or a stall shorter than stall_after, is no stall.
    await store.announce(IH, peer(5), owner="stuck", now=3, progress=5)
    assert await store.rescue(IH, peer(5).peer_id, helpers=8, now=3) is None
    await store.announce(IH, peer(3), owner="c3", now=5, progress=41)
    assert await store.rescue(IH, peer(3).peer_id, helpers=8, now=5) is None
    await store.announce(IH, peer(5), owner="stuck", now=4, progress=5)
    rescue = await store.rescue(IH, peer(5).peer_id, helpers=8, now=4)
    assert rescue is not None and rescue.first
    # Origin, complete peers, then by progress; the stalled peer is not handed itself.
    assert [p.peer_id for p in rescue.peers] == [peer(n).peer_id for n in (0, 1, 3, 2, 4)]
    # Those further along dial it: not the origin (it has no connection), not peers behind it.
    assert rescue.helpers == ["seed", "c3", "c2"]
    again = await store.rescue(IH, peer(5).peer_id, helpers=1, now=4)
    assert again is not None and again.helpers == ["seed"] and not again.first
    # Re-announcing without progress keeps the stall, and its count.
    await store.announce(IH, peer(5), owner="stuck", now=5, progress=5)
    third = await store.rescue(IH, peer(5).peer_id, helpers=1, now=5)
    assert third is not None and not third.first
    # Progress again: no longer stalled; and a complete peer never is.
    await store.announce(IH, peer(5), owner="stuck", now=6, progress=6)
    assert await store.rescue(IH, peer(5).peer_id, helpers=8, now=6) is None
    await store.announce(IH, peer(5), owner="stuck", now=11, progress=6)  # a new stall: logged again
    fresh = await store.rescue(IH, peer(5).peer_id, helpers=8, now=11)
    assert fresh is not None and fresh.first
    await store.announce(IH, peer(1, complete=True), owner="seed", now=20)
    assert await store.rescue(IH, peer(1).peer_id, helpers=8, now=20) is None
    assert await store.rescue(IH, peer(9).peer_id, helpers=8, now=20) is None, "an unknown peer"


async def test_rescue_leaves_out_expired_peers(make: Make) -> None:
    store = make(ttl=10, stall_after=4)
    await store.announce(IH, peer(1, complete=True), owner="seed", now=0)
    await store.announce(IH, peer(2), owner="stuck", now=5)
    rescue = await store.rescue(IH, peer(2).peer_id, helpers=8, now=12)
    assert rescue is not None and rescue.peers == [] and rescue.helpers == []
