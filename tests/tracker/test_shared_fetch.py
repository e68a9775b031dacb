"""A metainfo fetch that several tracker connections wait for outlives the one that asked first.

A real origin and tracker, a slow link between them (a TCP relay that holds each
response back), and raw websocket clients as agents would connect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket

from swarmreg.digest import Digest
from swarmreg.tracker.wire import TO_PEER, MetainfoReply, MetainfoRequest, decode, encode
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import upload_blob

NS = "library/slow"


class SlowRelay:
    """Forwards TCP connections to ``target``, each response ``latency`` seconds late.

    ``asked`` is set once a request has gone through, so a test knows the fetch is in flight.
    """

    def __init__(self, target: tuple[str, int], latency: float) -> None:
        self.target = target
        self.latency = latency
        self.asked = trio.Event()
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(*self.target)
        answered = trio.Event()  # the current response has started: no more delay for its rest
        async with client, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                nonlocal answered
                while data := await client.receive_some():
                    answered = trio.Event()
                    await upstream.send_all(data)
                    self.asked.set()
                nursery.cancel_scope.cancel()

            async def responses() -> None:
                while data := await upstream.receive_some():
                    if not answered.is_set():
                        await trio.sleep(self.latency)
                        answered.set()
                    await client.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(requests)
            nursery.start_soon(responses)


@asynccontextmanager
async def channel(tracker: RunningDaemon) -> AsyncIterator[WebSocketConnection]:
    host, _, port = tracker.ready["roles"]["tracker"]["ws"].rpartition(":")
    async with open_websocket(host, int(port), "/announce", use_ssl=False, max_message_size=16 << 20) as ws:
        yield ws


async def reply_to(ws: WebSocketConnection) -> object:
    with trio.fail_after(10):
        return decode(await ws.get_message(), TO_PEER, 16 << 20)


async def test_a_connection_that_closes_does_not_fail_the_others_waiting_for_its_fetch(
        nursery: trio.Nursery, tmp_path: Path, origin: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(64 << 10)))
        expected = (await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")).content
    host, _, port = origin.ready["roles"]["origin"]["http"].rpartition(":")
    relay = SlowRelay((host, int(port)), latency=1.5)
    await nursery.start(relay.run)
    tracker = await start_daemon(nursery, make_config(
        tmp_path / "tracker", f"tracker.origins=['127.0.0.1:{relay.port}']", "tracker.inline_max=0"), ["tracker"])
    try:
        async with channel(tracker) as second:
            async with channel(tracker) as first:
                await first.send_message(encode(MetainfoRequest(1, NS, str(digest))))
                with trio.fail_after(10):
                    await relay.asked.wait()  # the tracker is fetching, for the first connection
                await second.send_message(encode(MetainfoRequest(1, NS, str(digest))))
                await trio.sleep(0.3)  # the second request waits on that same fetch
            # The first connection is closed while the origin's answer is still on its way.
            reply = await reply_to(second)
            assert isinstance(reply, MetainfoReply) and reply.failure is None
            assert reply.metainfo == expected
            # Still open, and the metainfo is cached now.
            await second.send_message(encode(MetainfoRequest(2, NS, str(digest))))
            again = await reply_to(second)
            assert isinstance(again, MetainfoReply) and again.metainfo == expected
    finally:
        await tracker.stop()
