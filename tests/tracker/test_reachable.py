"""Unspecified hosts in the tracker's answers become the address the peer reached it at."""

from swarmreg.tracker.reachable import reachable, unspecified
from swarmreg.tracker.wire import AnnounceReply, MetainfoReply, Peer, Relay

ID = "ab" * 10


def test_listen_addresses_are_unspecified_and_dialable_ones_are_not() -> None:
    assert all(unspecified(host) for host in ("0.0.0.0", "::", "[::]", ""))
    assert not any(unspecified(host) for host in ("127.0.0.1", "::1", "10.0.0.1", "herd.example"))


def test_only_unspecified_peers_change() -> None:
    frame = AnnounceReply(1, "00" * 32, (Peer(ID, "0.0.0.0", 15001, origin=True), Peer(ID, "10.0.0.7", 16001)))
    assert [peer.host for peer in reachable(frame, "10.0.0.2").peers] == ["10.0.0.2", "10.0.0.7"]
    assert reachable(frame, "") is frame, "no local address known: the frame as it was"


def test_a_relay_url_on_every_address_takes_the_local_one_ipv6_bracketed() -> None:
    frame = MetainfoReply(1, relay=Relay("https://0.0.0.0:15002/base", 10))
    assert reachable(frame, "10.0.0.2").relay == Relay("https://10.0.0.2:15002/base", 10)
    assert reachable(frame, "fd00::2").relay == Relay("https://[fd00::2]:15002/base", 10)
    kept = MetainfoReply(1, relay=Relay("http://herd:15002", 10))
    assert reachable(kept, "10.0.0.2") is kept
