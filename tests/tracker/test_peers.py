"""The tracker's peer store: ordering, limits, expiry, connection ownership."""

from __future__ import annotations

import random

import trio
from trio.testing import MockClock

from swarmreg.tracker.messages import Peer
from swarmreg.tracker.peers import PeerStore

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


def test_a_peer_that_reconnected_is_not_dropped_with_its_old_connection() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1), owner="old", now=0)
    store.announce(IH, peer(1), owner="new", now=1)
    store.drop_owner("old")
    assert len(store.peers_for(IH, now=1)) == 1


def test_leave() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    store.announce(IH, peer(1), owner="c", now=0)
    store.leave(IH, peer(1).peer_id)
    assert store.peers_for(IH, now=0) == [] and len(store) == 0


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
