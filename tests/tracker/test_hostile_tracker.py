"""A tracker that breaks the protocol costs a peer that connection, never its daemon.

The tracker here is a fake written with trio-websocket: it answers each connection's first
request with one bad frame (undecodable bytes, an interval of -1, an interval of NaN) and
only the fourth connection's with a good reply. The peer must drop each bad connection,
reconnect with backoff and, in the end, get its peers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import Announcement, TrackerClient
from swarmreg.tracker.wire import (
    TO_PEER,
    AnnounceReply,
    Failure,
    MetainfoReply,
    Peer,
    ProtocolError,
    decode,
    encode,
)
from tests.conftest import make_config, start_daemon
from tests.origin.helpers import assert_error, blob_path

GOOD_PEER = {"peer_id": "ef" * 10, "host": "127.0.0.1", "port": 4242, "complete": True, "origin": False}
MALFORMED = b"\x93\x01\x02\x03"


def announce_reply(request_id: int, info_hash: str, interval: float) -> bytes:
    """An announce reply listing GOOD_PEER: our own encoder sends any interval; decoders check it."""
    return encode(AnnounceReply(request_id, info_hash, (Peer(**GOOD_PEER),), interval))


BAD_ANNOUNCE_REPLIES: list[Callable[[int, str], bytes]] = [
    lambda request_id, info_hash: MALFORMED,
    lambda request_id, info_hash: announce_reply(request_id, info_hash, -1),
    lambda request_id, info_hash: announce_reply(request_id, info_hash, math.nan),
]


class FakeTracker:
    """Answers the first request of connection n with ``bad[n]``, and every request after those."""

    def __init__(self, bad: list[Callable[[int, str], bytes]], good: Callable[[dict[str, Any]], bytes]) -> None:
        self.bad = bad
        self.good = good
        self.connections = 0
        self.closed: list[tuple[int | None, str | None]] = []  # how each bad connection ended

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        number = self.connections
        self.connections += 1
        try:
            while True:
                frame = msgpack.unpackb(await ws.get_message())
                body = frame["b"]
                if number < len(self.bad):
                    await ws.send_message(self.bad[number](body.get("request_id", 0), body.get("info_hash", "")))
                    # The peer hangs up on it: wait for its close.
                    with trio.fail_after(10):
                        await ws.get_message()
                elif frame["t"] in ("announce", "metainfo_request"):
                    await ws.send_message(self.good(frame))
        except ConnectionClosed as closed:
            self.closed.append((closed.reason.code, closed.reason.reason))

    async def serve(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(partial(serve_websocket, self.handle, "127.0.0.1", 0, ssl_context=None))
        return f"127.0.0.1:{server.port}"


def good_announce(frame: dict[str, Any]) -> bytes:
    return announce_reply(frame["b"]["request_id"], frame["b"]["info_hash"], 30.0)


@pytest.mark.parametrize("interval", [-1, 0, 0.5, 86400.5, math.nan, math.inf, -math.inf])
def test_a_reply_with_an_interval_out_of_bounds_does_not_decode(interval: float) -> None:
    with pytest.raises(ProtocolError, match="interval"):
        decode(announce_reply(1, "ab" * 32, interval), TO_PEER, 1 << 20)


def test_intervals_within_bounds_decode() -> None:
    for interval in (1, 1.0, 30.0, 86400):
        assert decode(announce_reply(1, "ab" * 32, interval), TO_PEER, 1 << 20).interval == interval


async def test_the_client_drops_bad_frames_reconnects_and_gets_its_peers(nursery: trio.Nursery) -> None:
    tracker = FakeTracker(BAD_ANNOUNCE_REPLIES, good_announce)
    address = Address.parse(await tracker.serve(nursery))
    received: list[tuple[str, tuple[Peer, ...]]] = []
    announcement = Announcement("ab" * 32, "sha256:" + "cd" * 32, "ns", True)
    client = TrackerClient(address, port=lambda: 1, peer_id="ab" * 10, announcements=lambda: [announcement],
                           on_peers=lambda info_hash, peers: received.append((info_hash, peers)))
    stop = trio.Event()
    finished = trio.Event()

    async def run() -> None:
        await client.run(stop)
        finished.set()

    nursery.start_soon(run)
    with trio.fail_after(20):
        while not received:
            await trio.sleep(0.02)
    assert received[0] == ("ab" * 32, (Peer(**GOOD_PEER),))
    assert tracker.connections == 4 and client.connects == 4
    # Each bad connection was closed by the peer with the protocol-error code and the reason.
    assert [code for code, _ in tracker.closed] == [1002, 1002, 1002]
    assert "a frame is a map" in (tracker.closed[0][1] or "")  # [1, 2, 3] in msgpack
    assert all("interval" in (reason or "") for _, reason in tracker.closed[1:])
    assert client.interval == 30.0 and not finished.is_set()
    stop.set()
    with trio.fail_after(5):
        await finished.wait()


def good_metainfo_failure(frame: dict[str, Any]) -> bytes:
    return encode(MetainfoReply(frame["b"]["request_id"], failure=Failure("BLOB_UNKNOWN", "no such blob here")))


async def test_an_agent_daemon_outlives_a_tracker_that_sends_bad_frames(nursery: trio.Nursery,
                                                                        tmp_path: Path) -> None:
    """The agent's daemon keeps serving, and a pull that met three bad replies gets the fourth."""
    tracker = FakeTracker(BAD_ANNOUNCE_REPLIES, good_metainfo_failure)
    where = await tracker.serve(nursery)
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"agent.tracker={where}"), ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        with trio.fail_after(30):
            response = await client.get(blob_path("library/x", "sha256:" + "12" * 32))
        assert_error(response, 404, "BLOB_UNKNOWN")
        assert tracker.connections == 4
        assert (await client.get("/health")).status_code == 200
    assert not agent.daemon.stopped.is_set()


async def test_a_reply_of_the_wrong_type_is_bad_gateway(nursery: trio.Nursery) -> None:
    """A tracker answering an announce with a metainfo reply: a clear error, not an AttributeError."""
    tracker = FakeTracker([], lambda frame: encode(MetainfoReply(frame["b"]["request_id"])))
    address = Address.parse(await tracker.serve(nursery))
    client = TrackerClient(address, port=lambda: 1, peer_id="ab" * 10, announcements=list,
                           on_peers=lambda info_hash, peers: None)
    stop = trio.Event()
    await nursery.start(client.run, stop)
    with trio.fail_after(10), pytest.raises(SwarmregError) as failed:
        await client.announce(Announcement("ab" * 32, "sha256:" + "cd" * 32, "ns", True))
    assert failed.value.code.code == "BAD_GATEWAY" and "MetainfoReply" in failed.value.message
    stop.set()
