"""Tracker frames: round trips, and a decoder that refuses anything else with ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmreg.tracker.wire import (
    TO_PEER,
    TO_TRACKER,
    Announce,
    AnnounceReply,
    Failure,
    Leave,
    MetainfoReply,
    MetainfoRequest,
    Peer,
    PeersPush,
    ProtocolError,
    Relay,
    decode,
    encode,
)

PEER = Peer("ab" * 10, "127.0.0.1", 6881, complete=True)
INFO_HASH = "cd" * 32
DIGEST = "sha256:" + "e" * 64
DIGEST512 = "sha512:" + "f" * 128  # 135 characters, the longest digest
LIMIT = 64 << 10


@pytest.mark.parametrize("frame", [
    Announce(1, INFO_HASH, DIGEST, "library/foo", PEER),
    Leave(INFO_HASH),
    MetainfoRequest(7, "library/foo", DIGEST),
    Announce(2, INFO_HASH, DIGEST512, "library/foo", PEER),
    MetainfoRequest(8, "library/foo", DIGEST512),
])
def test_frames_to_the_tracker_round_trip(frame: object) -> None:
    assert decode(encode(frame), TO_TRACKER, LIMIT) == frame


@pytest.mark.parametrize("frame", [
    AnnounceReply(1, INFO_HASH, (PEER, Peer("01" * 10, "10.0.0.2", 1, origin=True)), 30.0),
    AnnounceReply(2, INFO_HASH, failure=Failure("BLOB_UNKNOWN", "blob unknown to registry")),
    PeersPush(INFO_HASH, (PEER,)),
    MetainfoReply(3, metainfo=b"d4:infod...ee"),
    MetainfoReply(4, failure=Failure("UNAVAILABLE", "no origin")),
])
def test_frames_to_peers_round_trip(frame: object) -> None:
    assert decode(encode(frame), TO_PEER, 16 << 20) == frame


def frame(kind: str, body: object, version: object = 1) -> bytes:
    return msgpack.packb({"v": version, "t": kind, "b": body})


GOOD_ANNOUNCE = {"request_id": 1, "info_hash": INFO_HASH, "digest": DIGEST, "namespace": "ns",
                 "peer": {"peer_id": "ab" * 10, "host": "h", "port": 1, "complete": False, "origin": False}}


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "undecodable"),
    (b"\x92\x01", "undecodable"),  # truncated
    (frame("announce", GOOD_ANNOUNCE)[:-3], "undecodable"),
    (msgpack.packb([1, 2, 3]), "a frame is a map"),
    (frame("announce", GOOD_ANNOUNCE, version=2), "unsupported protocol version 2"),
    (frame("announce", GOOD_ANNOUNCE, version="1"), "unsupported protocol version"),
    (frame("bogus", {}), "unexpected frame type"),
    (frame("announce_reply", {"request_id": 1, "info_hash": INFO_HASH}), "unexpected frame type"),
    (frame("announce", {**GOOD_ANNOUNCE, "request_id": "1"}), "malformed announce"),
    (frame("announce", {**GOOD_ANNOUNCE, "info_hash": "zz"}), "malformed announce"),
    (frame("announce", {**GOOD_ANNOUNCE, "extra": 1}), "malformed announce"),
    (frame("announce", {**GOOD_ANNOUNCE, "peer": {**GOOD_ANNOUNCE["peer"], "port": 70000}}), "malformed announce"),
    (frame("announce", {**GOOD_ANNOUNCE, "peer": {**GOOD_ANNOUNCE["peer"], "complete": 1}}), "malformed announce"),
    (frame("leave", None), "malformed leave"),
    (frame("announce", {**GOOD_ANNOUNCE, "digest": DIGEST512 + "f"}), "malformed announce"),
    (b"\x00" * (LIMIT + 1), "exceeds"),
])
def test_bad_frames_are_protocol_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(data, TO_TRACKER, LIMIT)


def test_text_frames_are_refused() -> None:
    with pytest.raises(ProtocolError, match="binary"):
        decode("hello", TO_TRACKER, LIMIT)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


@settings(max_examples=10_000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        decode(data, TO_TRACKER, LIMIT)
    except ProtocolError:
        pass


@settings(max_examples=10_000, deadline=None)
@given(kind=st.sampled_from(["announce", "leave", "metainfo_request", "peers_push", "x"]),
       version=st.sampled_from([1, 1, 1, 0, 2, "1", None]), body=json_like)
def test_fuzz_well_formed_msgpack_with_any_body(kind: str, version: object, body: object) -> None:
    try:
        result = decode(frame(kind, body, version), TO_TRACKER, LIMIT)
    except ProtocolError:
        return
    assert type(result) in TO_TRACKER


def test_a_request_without_relay_is_the_frame_older_peers_send() -> None:
    """``relay`` came later: left at its default, it is not on the wire, so a tracker that
    predates it (which refuses unknown keys) takes the frame, and the bytes are those of before."""
    old = {"request_id": 7, "namespace": "library/foo", "digest": DIGEST}
    assert encode(MetainfoRequest(7, "library/foo", DIGEST)) == frame("metainfo_request", old)
    assert decode(frame("metainfo_request", old), TO_TRACKER, LIMIT) == MetainfoRequest(7, "library/foo", DIGEST)
    asked = MetainfoRequest(7, "library/foo", DIGEST, relay=True)
    assert decode(encode(asked), TO_TRACKER, LIMIT) == asked
    # A reply without a relay is the reply of before, too; one with a relay round-trips.
    reply = {"request_id": 3, "metainfo": b"d4:infod...ee", "failure": None, "content": None}
    assert encode(MetainfoReply(3, metainfo=b"d4:infod...ee")) == frame("metainfo_reply", reply)
    relayed = MetainfoReply(4, relay=Relay("https://origin:8443", 5 << 20))
    assert decode(encode(relayed), TO_PEER, LIMIT) == relayed


def test_an_announce_without_progress_is_the_frame_older_peers_send() -> None:
    """``progress`` came later: at 0 it is left off the wire (a tracker that predates it takes
    the frame); a download's progress round-trips, and a negative one is refused."""
    ih = "cd" * 32
    me = {"peer_id": PEER.peer_id, "host": PEER.host, "port": PEER.port, "complete": True, "origin": False}
    old = {"request_id": 1, "info_hash": ih, "digest": DIGEST, "namespace": "ns", "peer": me}
    assert encode(Announce(1, ih, DIGEST, "ns", PEER)) == frame("announce", old)
    moving = Announce(2, ih, DIGEST, "ns", PEER, progress=17)
    assert decode(encode(moving), TO_TRACKER, LIMIT) == moving
    with pytest.raises(ProtocolError):
        decode(frame("announce", old | {"progress": -1}), TO_TRACKER, LIMIT)
