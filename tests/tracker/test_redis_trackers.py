"""Two trackers (two daemons) sharing one real Redis: any tracker answers any announce, pushes
cross trackers, and a Redis that dies fails announces clearly until it is back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.redis_store import RedisStore
from swarmreg.tracker.wire import TO_PEER, Announce, AnnounceReply, MetainfoReply, MetainfoRequest, PeersPush, decode
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import upload_blob
from tests.servers.redis import RedisServer
from tests.tracker.test_tracker_service import NS, channel, me, request

pytestmark = pytest.mark.slow


@pytest.fixture
async def blob(origin_client: httpx.AsyncClient) -> tuple[Digest, Metainfo]:
    """A blob uploaded to the origin, and its metainfo."""
    digest = Digest.parse(await upload_blob(origin_client, NS, random_bytes(1 << 20)))
    response = await origin_client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")
    return digest, Metainfo.parse(response.content, digest)


@pytest.fixture
def tracker_overrides() -> tuple[str, ...]:
    """More settings for both trackers (a test parametrizes it)."""
    return ()


@pytest.fixture
async def trackers(nursery: trio.Nursery, tmp_path: Path, origin: RunningDaemon, redis_server: RedisServer,
                   tracker_overrides: tuple[str, ...]) -> AsyncIterator[tuple[RunningDaemon, RunningDaemon]]:
    """Trackers A and B, daemons of their own, on one origin and one Redis."""
    address = origin.ready["roles"]["origin"]["http"]
    started = [await start_daemon(nursery, make_config(tmp_path / name, f"tracker.origins=['{address}']",
                                                       f"tracker.store='{redis_server.url}'", *tracker_overrides),
                                  ["tracker"])
               for name in ("a", "b")]
    yield started[0], started[1]
    for daemon in started:
        await daemon.stop()


async def announce(ws: WebSocketConnection, blob: tuple[Digest, Metainfo], n: int,
                   request_id: int = 1) -> AnnounceReply:
    """Announce me(n); the reply (pushes that come first are skipped)."""
    digest, metainfo = blob
    reply = await request(ws, Announce(request_id, metainfo.info_hash, str(digest), NS, me(n)))
    with trio.fail_after(10):
        while isinstance(reply, PeersPush):
            reply = decode(await ws.get_message(), TO_PEER, 1 << 20)
    assert isinstance(reply, AnnounceReply)
    return reply


async def pushed(ws: WebSocketConnection) -> PeersPush:
    """The next push of a peer that is not an origin."""
    with trio.fail_after(10):
        while True:
            push = decode(await ws.get_message(), TO_PEER, 1 << 20)
            assert isinstance(push, PeersPush)
            if not all(p.origin for p in push.peers):
                return push


async def dropped(server: RedisServer, peer_id: str) -> None:
    """Wait until a closed connection's tracker has freed its peer id (the close handshake ends first)."""
    store = RedisStore(server.url, ttl=90, max_peers=50)
    try:
        with trio.fail_after(10):
            while await store.holder(peer_id) is not None:
                await trio.sleep(0.05)  # another process's state: nothing to wait on
    finally:
        await store.aclose()


async def test_any_tracker_answers_and_pushes_cross_trackers(
        trackers: tuple[RunningDaemon, RunningDaemon], blob: tuple[Digest, Metainfo],
        redis_server: RedisServer) -> None:
    a, b = trackers
    async with channel(b) as on_b:
        reply = await announce(on_b, blob, 1)
        assert reply.failure is None and [p.origin for p in reply.peers] == [True]
        async with channel(a) as on_a:
            # Handed the peer that announced to B; B's agent is pushed the one that joined through A.
            reply = await announce(on_a, blob, 2)
            assert reply.failure is None
            assert sorted(p.peer_id for p in reply.peers if not p.origin) == [me(1).peer_id]
            assert [p.peer_id for p in (await pushed(on_b)).peers] == [me(2).peer_id]
            # A peer id is its connection's in every tracker.
            async with channel(b) as impostor:
                taken = await announce(impostor, blob, 2)
                assert taken.failure is not None and taken.failure.code == "PEER_ID_TAKEN"
        # A's connection closed: its peer is gone for B's announces too, and its id is free.
        await dropped(redis_server, me(2).peer_id)
        reply = await announce(on_b, blob, 1, request_id=2)
        assert [p.peer_id for p in reply.peers if not p.origin] == []
        async with channel(b) as again:
            assert (await announce(again, blob, 2)).failure is None


@pytest.mark.parametrize("tracker_overrides", [("tracker.stall_after=0.3",)])
async def test_a_stalled_downloads_helpers_on_another_tracker_are_told_to_dial_it(
        trackers: tuple[RunningDaemon, RunningDaemon], blob: tuple[Digest, Metainfo]) -> None:
    a, b = trackers
    digest, metainfo = blob
    async with channel(a) as on_a, channel(b) as on_b:
        seed = await request(on_a, Announce(1, metainfo.info_hash, str(digest), NS, me(1, complete=True)))
        assert isinstance(seed, AnnounceReply) and seed.failure is None
        assert (await announce(on_b, blob, 2)).failure is None
        assert [p.peer_id for p in (await pushed(on_a)).peers] == [me(2).peer_id], "the newcomer"
        await trio.sleep(0.4)  # a stall is time without progress
        reply = await announce(on_b, blob, 2, request_id=2)
        assert [p.peer_id for p in reply.peers if not p.origin] == [me(1).peer_id]
        # No news (nothing changed): this push is the rescue's, through Redis to tracker A.
        assert [p.peer_id for p in (await pushed(on_a)).peers] == [me(2).peer_id]


async def test_a_dead_trackers_peer_ids_go_to_whoever_announces_them(
        trackers: tuple[RunningDaemon, RunningDaemon], blob: tuple[Digest, Metainfo],
        redis_server: RedisServer) -> None:
    """An agent whose tracker died (its heartbeat stops) re-announces through another tracker."""
    a, _ = trackers
    digest, metainfo = blob
    store = RedisStore(redis_server.url, ttl=90, max_peers=50)
    try:  # what a killed tracker leaves behind: a claim, and an entry, of a tracker with no heartbeat
        await store.announce(metainfo.info_hash, me(1), owner="c:deadbeefdeadbeef:1")
        async with channel(a) as ws:
            reply = await announce(ws, blob, 1)
            assert reply.failure is None
            holder = await store.holder(me(1).peer_id)
            assert holder is not None and holder.startswith("c:") and holder != "c:deadbeefdeadbeef:1"
            # The dead connection's entry (at the address it claimed) went with its claim.
            assert [p.host for p in await store.peers_for(metainfo.info_hash) if not p.origin] == ["127.0.0.1"]
    finally:
        await store.aclose()


async def test_a_just_killed_trackers_peer_ids_go_to_whoever_announces_them_once_its_beat_lapses(
        trackers: tuple[RunningDaemon, RunningDaemon], blob: tuple[Digest, Metainfo],
        redis_server: RedisServer) -> None:
    """Killed a moment ago, a tracker's heartbeat is still fresh while its agents announce through
    another: the announce waits for the beat to lapse instead of failing with PEER_ID_TAKEN (which
    failed the pulls that started then)."""
    a, _ = trackers
    _, metainfo = blob
    store = RedisStore(redis_server.url, ttl=90, max_peers=50)
    try:
        await store.heartbeat("deadbeefdeadbeef", 2.0)  # its last beat: it lapses in 2 s
        await store.announce(metainfo.info_hash, me(1), owner="c:deadbeefdeadbeef:1")
        async with channel(a) as ws:
            started = trio.current_time()
            reply = await announce(ws, blob, 1)
            assert reply.failure is None, reply.failure
            assert 1.0 < trio.current_time() - started < 5.0
    finally:
        await store.aclose()


async def subscribers(server: RedisServer) -> int:
    store = RedisStore(server.url, ttl=90, max_peers=50)
    try:
        return int((await trio.to_thread.run_sync(store.client.pubsub_numsub, store.channel))[0][1])
    finally:
        await store.aclose()


async def test_with_redis_dead_announces_fail_clearly_and_recover(
        trackers: tuple[RunningDaemon, RunningDaemon], blob: tuple[Digest, Metainfo],
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    a, b = trackers
    digest, _ = blob
    async with channel(a) as on_a, channel(b) as on_b:
        assert (await announce(on_b, blob, 1)).failure is None
        assert (await announce(on_a, blob, 2)).failure is None
        assert [p.peer_id for p in (await pushed(on_b)).peers] == [me(2).peer_id]
        redis_server.kill()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="swarmreg.tracker.redis_store"):
            for request_id in (2, 3, 4):
                reply = await announce(on_a, blob, 2, request_id)
                assert reply.failure is not None and reply.failure.code == "UNAVAILABLE"
                assert "peer store is unavailable" in reply.failure.message
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1, "logged once per outage"
        # The tracker serves on: metainfo is the origins', and the connection stays open.
        metainfo = await request(on_a, MetainfoRequest(5, NS, str(digest)))
        assert isinstance(metainfo, MetainfoReply) and metainfo.failure is None

        redis_server.start()  # empty: no persistence. Announces recreate what it held.
        with trio.fail_after(60):
            while await subscribers(redis_server) < 2:  # both trackers resubscribe, with backoff
                await trio.sleep(0.1)
        # The origin's entry was lost with Redis's memory: a download's announce has it recorded again.
        reply = await announce(on_b, blob, 1, 6)
        assert reply.failure is None and [p.origin for p in reply.peers] == [True]
        reply = await announce(on_a, blob, 2, 7)
        assert reply.failure is None and [p.peer_id for p in reply.peers if not p.origin] == [me(1).peer_id]
        assert [p.peer_id for p in (await pushed(on_b)).peers] == [me(2).peer_id]
