"""The tracker's peer store: ordering, limits, expiry, connection ownership."""

from __future__ import annotations

import random

import pytest
import trio
from trio.testing import MockClock

from swarmreg.errors import PEER_ID_TAKEN, SwarmregError
from swarmreg.tracker.peers import PeerStore
from swarmreg.tracker.wire import Peer

IH = "ab" * 32


def peer(n: int, *, complete: bool = False, origin: bool = False) -> Peer:
    return Peer(f"{n:020x}", "10.0.0.1", 1000 + n, complete, origin)


def test_seeds_and_origins_come_first_and_the_announcer_is_left_out() -> None:
    store = PeerStore(ttl=60, max_peers=50, rng=random.Random(1))
    store.announce(IH, peer(0, origin=True, complete=True), owner=None, now=0)
    for n in range(1, 6):
        store.announce(IH, peer(n), owner=f"c{n}", now=0)
    store.announce(IH, peer(6, complete=True), owner="c6", now=0)
    peers, news = store.announce(IH, peer(7), owner="c7", now=0)
    assert news
    assert {p.peer_id for p in peers[:2]} == {peer(0).peer_id, peer(6).peer_id}
    assert peer(7).peer_id not in {p.peer_id for p in peers}
    assert len(peers) == 7


def test_at_most_max_peers() -> None:
    store = PeerStore(ttl=60, max_peers=3)
    for n in range(10):
        store.announce(IH, peer(n), owner=f"c{n}", now=0)
    assert len(store.peers_for(IH, now=0)) == 3


def test_a_large_torrent_hands_out_seeds_first_drawn_at_random_and_never_a_stale_peer() -> None:
    store = PeerStore(ttl=10, max_peers=5, rng=random.Random(2))
    for n in range(2000):
        store.announce(IH, peer(n, complete=n < 3), owner=f"c{n}", now=0 if n % 2 else 5)
    store.announce(IH, peer(5000), owner="late", now=14)
    seen: set[str] = set()
    for _ in range(50):
        handed = store.peers_for(IH, exclude=peer(0).peer_id, now=6)
        assert {p.peer_id for p in handed[:2]} == {peer(1).peer_id, peer(2).peer_id}
        assert len(handed) == 5 and len(set(handed)) == 5 and not handed[2].complete
        seen.update(p.peer_id for p in handed[2:])
    assert len(seen) > 100, "drawn at random, not the same few"
    # At 12 the odd peers (announced at 0, TTL 10) are stale though not yet expired: never handed out.
    for _ in range(50):
        handed = store.peers_for(IH, now=12)
        assert len(handed) == 5
        assert all(int(p.peer_id, 16) % 2 == 0 or p.peer_id == peer(5000).peer_id for p in handed)
    # Peers that left are not drawn either.
    for n in range(2, 2000):
        store.leave(IH, f"c{n}")
    assert {p.peer_id for p in store.peers_for(IH, now=6)} == {peer(0).peer_id, peer(1).peer_id, peer(5000).peer_id}


def test_re_announcing_is_news_only_when_something_changed() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    assert store.announce(IH, peer(1), owner="c", now=0)[1]
    assert not store.announce(IH, peer(1), owner="c", now=1)[1]
    assert store.announce(IH, peer(1, complete=True), owner="c", now=2)[1]


def test_silent_peers_expire_but_origins_stay() -> None:
    store = PeerStore(ttl=10, max_peers=50)
    store.announce(IH, peer(0, origin=True, complete=True), owner=None, now=0)
    store.announce(IH, peer(1), owner="c1", now=0)
    store.announce(IH, peer(2), owner="c2", now=8)
    assert store.expire(now=11) == 1
    assert {p.peer_id for p in store.peers_for(IH, now=11)} == {peer(0).peer_id, peer(2).peer_id}


def test_a_closed_connection_takes_its_peers_with_it() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    other = "cd" * 32
    store.announce(IH, peer(1), owner="gone", now=0)
    store.announce(other, peer(1), owner="gone", now=0)
    store.announce(IH, peer(2), owner="stays", now=0)
    assert store.drop_owner("gone") == 2
    assert [p.peer_id for p in store.peers_for(IH, now=0)] == [peer(2).peer_id]
    assert store.peers_for(other, now=0) == []
    assert len(store) == 1


def test_a_peer_id_is_free_again_once_its_connection_closed() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1), owner="old", now=0)
    store.drop_owner("old")
    store.announce(IH, peer(1), owner="new", now=1)
    assert store.holder(peer(1).peer_id) == "new"
    assert len(store.peers_for(IH, now=1)) == 1


def test_leave() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1), owner="c", now=0)
    store.leave(IH, "c")
    assert store.peers_for(IH, now=0) == [] and len(store) == 0
    assert store.holder(peer(1).peer_id) == "c", "leaving a torrent keeps the connection's peer id"


def refused(store: PeerStore, info_hash: str, p: Peer, owner: str) -> None:
    with pytest.raises(SwarmregError) as error:
        store.announce(info_hash, p, owner=owner, now=5)
    assert error.value.code is PEER_ID_TAKEN


def test_another_connections_peer_id_is_refused_in_every_torrent() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    other = "cd" * 32
    store.announce(IH, peer(1), owner="first", now=0)
    refused(store, IH, Peer(peer(1).peer_id, "10.0.0.66", 6666, complete=True), "impostor")
    refused(store, other, peer(1), "impostor")
    # Nothing changed: the first connection's entry stays, and its leaving still works.
    assert store.peers_for(IH, now=5) == [peer(1)] and store.peers_for(other, now=5) == []
    store.drop_owner("impostor")
    assert store.peers_for(IH, now=5) == [peer(1)]
    store.leave(IH, "impostor")
    assert store.peers_for(IH, now=5) == [peer(1)]
    assert store.holder(peer(1).peer_id) == "first"


def test_a_connection_is_one_peer() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1), owner="c", now=0)
    store.announce("cd" * 32, peer(1, complete=True), owner="c", now=0)  # the same id: fine
    refused(store, IH, peer(2), "c")
    assert store.peers_for(IH, now=5) == [peer(1)] and store.holder(peer(2).peer_id) is None


def test_an_origins_peer_id_cannot_be_announced_replaced_or_removed_by_a_connection() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    origin = peer(0, origin=True, complete=True)
    other = "cd" * 32
    store.announce(IH, origin, owner=("origin", "o:1"), now=0)
    refused(store, IH, peer(0), "impostor")
    refused(store, other, peer(0), "impostor")  # nor in a torrent the origin is not recorded in
    store.leave(IH, "impostor")
    store.drop_owner("impostor")
    assert store.expire(now=10_000) == 0
    assert store.peers_for(IH, now=10_000) == [origin] and store.peers_for(other, now=0) == []


def test_an_origin_takes_its_peer_id_back_from_a_connection() -> None:
    """A connection that learnt a restarted origin's new id before the tracker did loses it."""
    store = PeerStore(ttl=60, max_peers=50)
    other = "cd" * 32
    store.announce(IH, peer(0), owner="impostor", now=0)
    store.announce(other, peer(0), owner="impostor", now=0)
    origin = peer(0, origin=True, complete=True)
    store.announce(IH, origin, owner=("origin", "o:1"), now=1)
    assert store.peers_for(IH, now=1) == [origin] and store.peers_for(other, now=1) == []
    assert store.holder(peer(0).peer_id) is None
    refused(store, other, peer(0), "impostor")
    store.drop_owner("impostor")
    assert store.peers_for(IH, now=1) == [origin]


def test_an_owner_has_one_peer_per_torrent() -> None:
    """A restarted origin (new peer id, same address) replaces its old entry."""
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1, origin=True, complete=True), owner=("origin", "o:1"), now=0)
    store.announce(IH, peer(2, origin=True, complete=True), owner=("origin", "o:1"), now=1)
    assert [p.peer_id for p in store.peers_for(IH, now=1)] == [peer(2).peer_id]


async def test_times_are_trios_clock_the_one_the_tracker_sleeps_on(autojump_clock: MockClock) -> None:
    store = PeerStore(ttl=10, max_peers=50)
    store.announce(IH, peer(1), owner="c1")
    await trio.sleep(9)
    store.announce(IH, peer(2), owner="c2")
    assert store.expire() == 0
    await trio.sleep(2)  # on a mock clock: no real time passes
    assert store.expire() == 1
    assert [p.peer_id for p in store.peers_for(IH)] == [peer(2).peer_id]


def test_a_download_whose_progress_stops_is_rescued_by_the_peers_furthest_along() -> None:
    store = PeerStore(ttl=60, max_peers=50, stall_after=4)
    store.announce(IH, peer(0, origin=True, complete=True), owner=("origin", "o"), now=0)
    store.announce(IH, peer(1, complete=True), owner="seed", now=0)
    for n, progress in ((2, 10), (3, 40), (4, 0)):
        store.announce(IH, peer(n), owner=f"c{n}", now=0, progress=progress)
    store.announce(IH, peer(5), owner="stuck", now=0, progress=5)
    # Progress that grows, or a stall shorter than stall_after, is no stall.
    store.announce(IH, peer(5), owner="stuck", now=3, progress=5)
    assert store.rescue(IH, peer(5).peer_id, helpers=8, now=3) is None
    store.announce(IH, peer(3), owner="c3", now=5, progress=41)
    assert store.rescue(IH, peer(3).peer_id, helpers=8, now=5) is None
    store.announce(IH, peer(5), owner="stuck", now=4, progress=5)
    rescue = store.rescue(IH, peer(5).peer_id, helpers=8, now=4)
    assert rescue is not None and rescue.first
    # Origin, complete peers, then by progress; the stalled peer is not handed itself.
    assert [p.peer_id for p in rescue.peers] == [peer(n).peer_id for n in (0, 1, 3, 2, 4)]
    # Those further along dial it: not the origin (it has no connection), not peers behind it.
    assert rescue.helpers == ["seed", "c3", "c2"]
    again = store.rescue(IH, peer(5).peer_id, helpers=1, now=4)
    assert again is not None and again.helpers == ["seed"] and not again.first
    # Progress again: no longer stalled; and a complete peer never is.
    store.announce(IH, peer(5), owner="stuck", now=6, progress=6)
    assert store.rescue(IH, peer(5).peer_id, helpers=8, now=6) is None
    store.announce(IH, peer(5), owner="stuck", now=11, progress=6)  # a new stall: logged again
    assert store.rescue(IH, peer(5).peer_id, helpers=8, now=11).first  # type: ignore[union-attr]
    store.announce(IH, peer(1, complete=True), owner="seed", now=20)
    assert store.rescue(IH, peer(1).peer_id, helpers=8, now=20) is None
