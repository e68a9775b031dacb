"""The tracker's websocket channel with a real origin behind it and raw websocket clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket

from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.wire import (
    TO_PEER,
    Announce,
    AnnounceReply,
    MetainfoReply,
    MetainfoRequest,
    Peer,
    PeersPush,
    decode,
    encode,
)
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import upload_blob

NS = "library/tracked"


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker"])
    yield running
    await running.stop()


@pytest.fixture
async def blob(herd: RunningDaemon) -> tuple[Digest, Metainfo]:
    """A blob uploaded to the herd's origin, and its metainfo as the tracker serves it."""
    async with httpx.AsyncClient(base_url=herd.url("origin")) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(1 << 20)))
        response = await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")
    return digest, Metainfo.parse(response.content, digest)


@asynccontextmanager
async def channel(herd: RunningDaemon) -> AsyncIterator[WebSocketConnection]:
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    async with open_websocket(host, int(port), "/announce", use_ssl=False, max_message_size=16 << 20) as ws:
        yield ws


async def request(ws: WebSocketConnection, frame: object) -> object:
    await ws.send_message(encode(frame))
    with trio.fail_after(10):
        return decode(await ws.get_message(), TO_PEER, 16 << 20)


def me(n: int, complete: bool = False) -> Peer:
    return Peer(f"{n:020x}", "203.0.113.9", 7000 + n, complete)  # a host the tracker must not trust


async def test_metainfo_comes_from_the_origin(herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, metainfo = blob
    async with channel(herd) as ws:
        reply = await request(ws, MetainfoRequest(1, NS, str(digest)))
        assert isinstance(reply, MetainfoReply) and reply.metainfo == metainfo.raw
        assert reply.content == random_bytes(1 << 20), "a blob up to tracker.inline_max comes inline"
        reply = await request(ws, MetainfoRequest(2, NS, str(Digest.of(b"unknown"))))
        assert reply.failure is not None and reply.failure.code == "BLOB_UNKNOWN"


async def test_announce_lists_the_origin_first_and_pushes_newcomers(
        herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, metainfo = blob
    origin_port = int(herd.ready["peer"].rpartition(":")[2])
    async with channel(herd) as first, channel(herd) as second:
        reply = await request(first, Announce(1, metainfo.info_hash, str(digest), NS, me(1)))
        assert isinstance(reply, AnnounceReply) and reply.failure is None
        assert [(p.origin, p.port) for p in reply.peers] == [(True, origin_port)]

        reply = await request(second, Announce(1, metainfo.info_hash, str(digest), NS, me(2)))
        assert [p.peer_id for p in reply.peers] == [herd.daemon.node.engine.peer_id, me(1).peer_id]
        # The peer's address is where its connection comes from, not what it claimed.
        assert reply.peers[1].host == "127.0.0.1" and reply.peers[1].port == 7001

        with trio.fail_after(10):
            push = decode(await first.get_message(), TO_PEER, 1 << 20)
        assert isinstance(push, PeersPush) and [p.peer_id for p in push.peers] == [me(2).peer_id]

    # Both connections closed: their peers went with them.
    async with channel(herd) as third:
        reply = await request(third, Announce(1, metainfo.info_hash, str(digest), NS, me(3)))
        assert [p.origin for p in reply.peers] == [True]


async def test_announce_of_an_unknown_blob_fails_in_the_reply(herd: RunningDaemon) -> None:
    async with channel(herd) as ws:
        reply = await request(ws, Announce(1, "ab" * 32, str(Digest.of(b"nobody")), NS, me(1)))
        assert reply.failure is not None and reply.failure.code == "BLOB_UNKNOWN"


async def test_a_wrong_info_hash_closes_the_connection(herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, _ = blob
    async with channel(herd) as ws:
        await ws.send_message(encode(Announce(1, "ab" * 32, str(digest), NS, me(1))))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1008 and "info-hash" in closed.value.reason.reason


@pytest.mark.parametrize(("data", "code", "reason"), [
    (b"\x92\x01", 1008, "undecodable"),
    (msgpack.packb({"v": 9, "t": "announce", "b": {}}), 1008, "version"),
    (msgpack.packb({"v": 1, "t": "peers_push", "b": {"info_hash": "ab" * 32, "peers": []}}), 1008, "unexpected"),
    (b"\x00" * (128 << 10), 1009, None),  # over max_frame_size: trio-websocket's "message too big"
])
async def test_a_bad_frame_closes_only_its_own_connection(herd: RunningDaemon, blob: tuple[Digest, Metainfo],
                                                         data: bytes, code: int, reason: str | None) -> None:
    digest, metainfo = blob
    async with channel(herd) as good, channel(herd) as bad:
        await bad.send_message(data)
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(10):
                await bad.get_message()
        assert closed.value.reason.code == code
        if reason:
            assert reason in closed.value.reason.reason
        reply = await request(good, Announce(1, metainfo.info_hash, str(digest), NS, me(1)))
        assert isinstance(reply, AnnounceReply) and reply.failure is None


async def test_text_frames_and_wrong_paths_are_refused(herd: RunningDaemon) -> None:
    async with channel(herd) as ws:
        await ws.send_message("hello")
        with pytest.raises(ConnectionClosed):
            with trio.fail_after(10):
                await ws.get_message()
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    with pytest.raises(Exception, match="404"):
        async with open_websocket(host, int(port), "/elsewhere", use_ssl=False):
            pass


async def test_a_refused_handshake_ends_its_connection(herd: RunningDaemon) -> None:
    # trio-websocket sent the 404 and then kept the socket open until the client hung up.
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET /elsewhere HTTP/1.1\r\nHost: tracker\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n")
    received = b""
    with trio.fail_after(5):
        while data := await stream.receive_some(4096):
            received += data
    await stream.aclose()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ") and b"connection: close" in head.lower()
    assert body == b"the announce channel is at /announce"


async def test_larger_blobs_come_without_their_content(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", "tracker.inline_max=1000"),
                              ["origin", "tracker"])
    async with httpx.AsyncClient(base_url=herd.url("origin")) as client:
        digest = await upload_blob(client, NS, random_bytes(5000))
    async with channel(herd) as ws:
        reply = await request(ws, MetainfoRequest(1, NS, digest))
        assert reply.metainfo and reply.content is None
    await herd.stop()


async def test_a_flood_of_announces_is_slowed_down_and_others_are_served_meanwhile(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", "tracker.frame_rate=50",
                                                   "tracker.frame_burst=20"), ["origin", "tracker"])
    async with httpx.AsyncClient(base_url=herd.url("origin")) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(1 << 20)))
        metainfo = Metainfo.parse((await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")).content, digest)
    flood_size = 120
    async with channel(herd) as flooder, channel(herd) as neighbour:
        started = trio.current_time()
        for n in range(flood_size):
            await flooder.send_message(encode(Announce(n, metainfo.info_hash, str(digest), NS, me(n % 5))))
        answered = 0

        async def count_the_flood_answers() -> None:
            nonlocal answered
            while answered < flood_size:
                if isinstance(decode(await flooder.get_message(), TO_PEER, 16 << 20), AnnounceReply):
                    answered += 1

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(count_the_flood_answers)
                reply = await request(neighbour, Announce(1, metainfo.info_hash, str(digest), NS, me(99)))
                answered_before_the_neighbour = answered
        assert isinstance(reply, AnnounceReply) and reply.failure is None
        assert answered_before_the_neighbour < flood_size, "the neighbour is answered while the flood is throttled"
        # 20 at once, then 50 a second: the other 100 take at least 2 s.
        assert trio.current_time() - started >= (flood_size - 20) / 50 * 0.9


async def announce(ws: WebSocketConnection, digest: Digest, metainfo: Metainfo, peer: Peer) -> AnnounceReply:
    reply = await request(ws, Announce(1, metainfo.info_hash, str(digest), NS, peer))
    assert isinstance(reply, AnnounceReply)
    return reply


async def next_push(ws: WebSocketConnection) -> PeersPush:
    with trio.fail_after(10):
        push = decode(await ws.get_message(), TO_PEER, 1 << 20)
    assert isinstance(push, PeersPush)
    return push


async def test_a_peer_id_belongs_to_the_connection_that_announced_it(
        herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, metainfo = blob
    impostor = Peer(me(1).peer_id, "203.0.113.9", 7666)
    async with channel(herd) as first, channel(herd) as third:
        await announce(third, digest, metainfo, me(3))
        assert (await announce(first, digest, metainfo, me(1))).failure is None
        assert [(p.peer_id, p.port) for p in (await next_push(third)).peers] == [(me(1).peer_id, 7001)]
        async with channel(herd) as second:
            reply = await announce(second, digest, metainfo, impostor)
            assert reply.failure is not None and reply.failure.code == "PEER_ID_TAKEN" and not reply.peers
            # Nothing was replaced: the next push is the next newcomer's, and lists show the first.
            async with channel(herd) as fourth:
                await announce(fourth, digest, metainfo, me(4))
                assert [p.peer_id for p in (await next_push(third)).peers] == [me(4).peer_id]
            listed = [(p.peer_id, p.port) for p in (await announce(third, digest, metainfo, me(3))).peers]
            assert (me(1).peer_id, 7001) in listed and (me(1).peer_id, 7666) not in listed
        # The impostor has gone, the first is still there.
        listed = [(p.peer_id, p.port) for p in (await announce(third, digest, metainfo, me(3))).peers]
        assert (me(1).peer_id, 7001) in listed


async def test_connections_that_open_at_once_are_each_their_own(herd: RunningDaemon,
                                                                 blob: tuple[Digest, Metainfo]) -> None:
    """Agents whose tracker died reconnect to the next one at the same moment: each connection
    is still its own owner (two once shared one, and the second's announces were refused)."""
    digest, metainfo = blob
    replies: dict[int, object] = {}

    async def one(n: int) -> None:
        async with channel(herd) as ws:
            replies[n] = await announce(ws, digest, metainfo, me(n))

    async with trio.open_nursery() as nursery:
        for n in range(1, 9):
            nursery.start_soon(one, n)
    assert [getattr(reply, "failure", "?") for reply in replies.values()] == [None] * 8


async def test_a_closed_connections_peer_id_is_free_again(herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, metainfo = blob
    async with channel(herd) as second, channel(herd) as third:
        async with channel(herd) as first:
            await announce(first, digest, metainfo, me(1))
            refused = await announce(second, digest, metainfo, me(1))
            assert refused.failure is not None and refused.failure.code == "PEER_ID_TAKEN"
        reply = await announce(second, digest, metainfo, me(1))
        assert reply.failure is None
        listed = [(p.peer_id, p.port) for p in (await announce(third, digest, metainfo, me(3))).peers]
        assert (me(1).peer_id, 7001) in listed


async def test_a_connection_cannot_take_the_origins_peer_id(herd: RunningDaemon, blob: tuple[Digest, Metainfo]) -> None:
    digest, metainfo = blob
    async with channel(herd) as first:
        [origin] = [p for p in (await announce(first, digest, metainfo, me(1))).peers if p.origin]
        async with channel(herd) as impostor:
            reply = await announce(impostor, digest, metainfo, Peer(origin.peer_id, "203.0.113.9", 7666, True))
            assert reply.failure is not None and reply.failure.code == "PEER_ID_TAKEN"
        # The impostor disconnected: the origin is in every peer list still.
        assert origin in (await announce(first, digest, metainfo, me(1))).peers
        async with channel(herd) as third:
            assert origin in (await announce(third, digest, metainfo, me(3))).peers


async def test_the_origins_own_daemon_may_announce_its_peer_id(herd: RunningDaemon,
                                                               blob: tuple[Digest, Metainfo]) -> None:
    """An agent role in the origin's daemon shares its peer wire and peer id: its announce is the origin's."""
    digest, metainfo = blob
    async with channel(herd) as first:
        [origin] = [p for p in (await announce(first, digest, metainfo, me(1))).peers if p.origin]
        async with channel(herd) as same_node:  # from the origin's address, with its port
            reply = await announce(same_node, digest, metainfo, Peer(origin.peer_id, "ignored", origin.port, True))
            assert reply.failure is None and me(1).peer_id in [p.peer_id for p in reply.peers]
            assert origin.peer_id not in [p.peer_id for p in reply.peers]
        assert origin in (await announce(first, digest, metainfo, me(1))).peers


async def test_a_holder_that_does_not_answer_a_ping_loses_its_peer_id(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A peer that reconnected gets its id back from its old connection if that one is dead."""
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", "tracker.handshake_timeout=1"),
                              ["origin", "tracker"])
    async with httpx.AsyncClient(base_url=herd.url("origin")) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(1 << 20)))
        metainfo = Metainfo.parse((await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")).content, digest)
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    # With no message queue, a connection that stops reading stops answering pings too.
    async with open_websocket(host, int(port), "/announce", use_ssl=False, message_queue_size=0) as stuck:
        await announce(stuck, digest, metainfo, me(1))
        async with channel(herd) as other, channel(herd) as again:
            await announce(other, digest, metainfo, me(2))  # pushed to the stuck one, which does not read it
            reply = await announce(again, digest, metainfo, Peer(me(1).peer_id, "203.0.113.9", 7666))
            assert reply.failure is None
            assert [(p.peer_id, p.port) for p in (await next_push(other)).peers] == [(me(1).peer_id, 7666)]
            listed = [(p.peer_id, p.port) for p in (await announce(other, digest, metainfo, me(2))).peers]
            assert (me(1).peer_id, 7666) in listed and (me(1).peer_id, 7001) not in listed
        with pytest.raises(ConnectionClosed), trio.fail_after(10):
            while True:  # the push it did not read, then the close
                await stuck.get_message()
    await herd.stop()


async def test_an_origin_listening_on_every_address_is_handed_out_where_the_peer_reached_this_host(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # As in the container image: the herd's origin and peer wire on 0.0.0.0, no [cluster] origins.
    # 0.0.0.0 means "this host" only on this host; an agent elsewhere dialling it dials itself.
    config = make_config(tmp_path / "herd", "origin.listen=0.0.0.0:0", "swarm.listen=0.0.0.0:0",
                         "tracker.listen=0.0.0.0:0", "cluster.secret=the-secret")
    herd = await start_daemon(nursery, config, ["origin", "tracker"])
    origin_port = int(herd.url("origin").rpartition(":")[2])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{origin_port}",
                                 headers={"Authorization": "Bearer the-secret"}) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(1 << 20)))
        metainfo = Metainfo.parse((await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")).content, digest)
    tracker_port = int(herd.ready["roles"]["tracker"]["ws"].rpartition(":")[2])
    async with open_websocket("127.0.0.1", tracker_port, "/announce", use_ssl=False,
                              extra_headers=[(b"authorization", b"Bearer the-secret")]) as ws:
        reply = await request(ws, Announce(1, metainfo.info_hash, str(digest), NS, me(1)))
    assert isinstance(reply, AnnounceReply) and reply.failure is None
    [origin] = [peer for peer in reply.peers if peer.origin]
    assert origin.host == "127.0.0.1"
    await herd.stop()
