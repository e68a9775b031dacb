"""What the tracker tells an agent when its origins fail it: the error's code and its own words,
never an exception's text (the origin's answer is logged instead)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
from quart import Response
from quart_trio import QuartTrio

from swarmreg.config import Address, HttpConfig
from swarmreg.digest import Digest
from swarmreg.http.serve import serve_http
from swarmreg.origin.wire import PEER_ID_HEADER, PEER_PORT_HEADER
from swarmreg.swarm.metainfo import build_metainfo
from swarmreg.tracker.wire import MetainfoReply, MetainfoRequest, encode
from tests.conftest import make_config, random_bytes, start_daemon
from tests.tracker.test_shared_fetch import channel, reply_to

NS = "library/odd"


async def test_a_bad_seeder_in_an_origins_answer_is_not_quoted_to_agents(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    data = random_bytes(64 << 10)
    digest = Digest.of(data)
    (tmp_path / digest.hex).write_bytes(data)
    metainfo = build_metainfo(tmp_path / digest.hex, digest)
    odd = QuartTrio("odd-origin")

    @odd.get("/namespace/<path:namespace>/blobs/<digest>/metainfo")
    async def answer(namespace: str, digest: str) -> Response:
        # Real metainfo, but a seeder the tracker cannot record (its peer id is no hex).
        return Response(metainfo.raw, headers={PEER_ID_HEADER: "zz" * 20, PEER_PORT_HEADER: "6881"})

    stop = trio.Event()
    address = await nursery.start(partial(serve_http, odd, Address("127.0.0.1", 0), http=HttpConfig(),
                                          stop=stop, graceful_timeout=1))
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", f"tracker.origins=['{address}']"),
                                 ["tracker"])
    try:
        async with channel(tracker) as ws:
            await ws.send_message(encode(MetainfoRequest(1, NS, str(digest))))
            reply = await reply_to(ws)
        assert isinstance(reply, MetainfoReply) and reply.failure is not None
        assert reply.failure.code == "BAD_GATEWAY"
        assert "hex digits" not in reply.failure.message and "peer_id" not in reply.failure.message
    finally:
        await tracker.stop()
        stop.set()
