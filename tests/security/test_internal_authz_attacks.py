"""Issue 11 attacked again (points 1, 2, 6, 9, 10): what a careless or hostile client broke.

Each test here failed before its fix; docs/security.md ("Issue 11 attacked, second round") says
what broke and why it no longer does.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket, serve_websocket

from swarmreg.config import ConfigError, load_config
from swarmreg.devcluster import make_dev_certs, tls_overrides
from swarmreg.digest import Digest
from swarmreg.origin.wire import PEER_ID_HEADER, PEER_PORT_HEADER
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.wire import (
    MAX_PEERS,
    MAX_REPLY,
    TO_PEER,
    TO_TRACKER,
    AnnounceReply,
    MetainfoReply,
    MetainfoRequest,
    Peer,
    PeersPush,
    ProtocolError,
    decode,
    encode,
)
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error, blob_path, upload_blob
from tests.proxy.helpers import digest_of

NS = "attack2/blobs"


@pytest.mark.parametrize("secret", ["a-secret-pasted-with-a-newline\n", " leading-space", "trailing-space ",
                                    "two words", "tab\there", "sécret-non-ascii", "nul\0byte"])
def test_a_secret_no_header_can_carry_is_refused_at_load(secret: str) -> None:
    """Such a secret started the daemon, then every internal write failed: httpx refuses the header
    (a space at either end, a control character, non-ASCII), or the server, which strips it, never
    matched it, so every push through the proxy was a 500 or a 401."""
    with pytest.raises(ConfigError) as refused:
        load_config(None, [f"cluster.secret={json.dumps(secret)}"])  # JSON's escapes are TOML's
    assert "cluster.secret" in str(refused.value) and "printable ASCII" in str(refused.value)
    assert secret.strip() not in str(refused.value), "the refusal does not quote the secret"


def test_printable_secrets_load() -> None:
    for secret in ("0123abcdef" * 6, "base64+/=_-.~!#$%&'*^`|", ""):
        assert load_config(None, [f"cluster.secret={json.dumps(secret)}"]).cluster.secret == secret


# -- a tracker's peers (point 2) ---------------------------------------------------------------

BAD_HOSTS = ("evil.example", "nul\0host", "", "999.1.1.1", "x" * 255)


async def test_peers_with_hosts_that_are_no_address_cost_only_themselves(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    """A tracker listing peers at host names (or NUL, empty, 999.1.1.1) next to the origin: libtorrent
    refuses such an endpoint with Boost.Python's ArgumentError, a TypeError the agent did not
    catch, so every pull the tracker answered so failed with 500 and each push of peers broke the
    tracker connection. The bad peers are skipped; the pull gets the blob from the origin."""
    origin = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    data = random_bytes(2 << 20, seed=11)
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        digest = await upload_blob(client, NS, data)
        described = await client.get(f"{blob_path(NS, digest)}/metainfo")
    seeder = Peer(described.headers[PEER_ID_HEADER], "127.0.0.1", int(described.headers[PEER_PORT_HEADER]),
                  complete=True, origin=True)
    metainfo = Metainfo.parse(described.content, Digest.parse(digest))
    bad = tuple(Peer(f"{n:020x}", host, 6881 + n, complete=True) for n, host in enumerate(BAD_HOSTS))

    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                frame = msgpack.unpackb(await ws.get_message())
                body = frame["b"]
                if frame["t"] == "metainfo_request":
                    await ws.send_message(encode(MetainfoReply(body["request_id"], described.content)))
                elif frame["t"] == "announce":
                    await ws.send_message(encode(PeersPush(metainfo.info_hash, bad)))
                    await ws.send_message(encode(AnnounceReply(body["request_id"], metainfo.info_hash,
                                                               (*bad, seeder), 30.0)))
        except ConnectionClosed:
            pass

    server = await nursery.start(partial(serve_websocket, handle, "127.0.0.1", 0, ssl_context=None))
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"agent.tracker=127.0.0.1:{server.port}"),
                               ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        with trio.fail_after(60):
            pulled = await client.get(blob_path(NS, digest))
        assert pulled.status_code == 200, pulled.text
        assert pulled.content == data
        assert (await client.get("/health")).status_code == 200
    await agent.stop()
    await origin.stop()


# -- tracker frames (point 2) ------------------------------------------------------------------

BYTES_KEYS = [
    ("leave", {b"info_hash": "ab" * 32}),
    ("leave", {"info_hash": "ab" * 32, b"extra": 1}),
    ("announce", {"request_id": 1, "info_hash": "ab" * 32, "digest": "sha256:" + "cd" * 32, "namespace": "n",
                  "peer": {b"peer_id": "ab" * 10, "host": "", "port": 1}}),
    ("announce_reply", {"request_id": 1, "info_hash": "ab" * 32, "peers": [{b"peer_id": "ab" * 10}]}),
]


@pytest.mark.parametrize("kind, body", BYTES_KEYS)
def test_a_body_with_a_bytes_key_is_a_protocol_error(kind: str, body: dict[Any, Any]) -> None:
    """msgpack lets a map key be bytes; cattrs' error path could not be joined (TypeError), which
    escaped decode(): the tracker answered 1011 with a traceback, an agent logged one."""
    frame = msgpack.packb({"v": 1, "t": kind, "b": body})
    with pytest.raises(ProtocolError, match=f"malformed {kind} frame"):
        decode(frame, TO_TRACKER | TO_PEER, 1 << 20)


def test_a_non_map_where_a_map_goes_says_so() -> None:
    frame = msgpack.packb({"v": 1, "t": "announce", "b": {
        "request_id": 1, "info_hash": "ab" * 32, "digest": "sha256:" + "cd" * 32, "namespace": "n", "peer": ["x"]}})
    with pytest.raises(ProtocolError) as refused:
        decode(frame, TO_TRACKER, 1 << 20)
    assert "expected a map @ $.peer" in str(refused.value) and "attribute" not in str(refused.value)


async def test_the_tracker_closes_a_frame_with_bytes_keys_as_a_protocol_error(nursery: trio.Nursery,
                                                                             tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker"])
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    for kind, body in BYTES_KEYS[:3]:
        async with open_websocket(host, int(port), "/announce", use_ssl=False) as ws:
            await ws.send_message(msgpack.packb({"v": 1, "t": kind, "b": body}))
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 1008, closed.value.reason
        assert f"malformed {kind} frame" in (closed.value.reason.reason or "")
    async with open_websocket(host, int(port), "/announce", use_ssl=False) as ws:  # and it serves on
        await ws.send_message(encode(MetainfoRequest(7, NS, "sha256:" + "cd" * 32)))
        with trio.fail_after(10):
            reply = decode(await ws.get_message(), TO_PEER, 1 << 20)
        assert isinstance(reply, MetainfoReply) and reply.request_id == 7
    await herd.stop()


# -- a node with the wrong cluster credentials (point 1) ---------------------------------------

async def push_refused(proxy: RunningDaemon, *, hidden: str) -> None:
    """Every write of a docker push through ``proxy`` is 502 BAD_GATEWAY naming the fix, not a 401
    or 403 that a docker client takes for its own login (nor one that names ``hidden``)."""
    layer = random_bytes(4096, seed=21)
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=30) as registry:
        answers = [await registry.post("/v2/misconfigured/app/blobs/uploads/"),
                   await registry.post("/v2/misconfigured/app/blobs/uploads/", params={"digest": digest_of(layer)},
                                       content=layer),
                   await registry.delete("/v2/misconfigured/app/manifests/v1")]
    for response in answers:
        assert_error(response, 502, "BAD_GATEWAY")
        assert "WWW-Authenticate" not in response.headers
        assert "cluster credentials" in response.text and "[cluster] secret" in response.text, response.text
        assert hidden not in response.text


async def test_a_proxy_with_the_wrong_secret_answers_bad_gateway(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", 'cluster.secret="the-right-secret-0123"'),
                              ["origin", "index"])
    roles = herd.ready["roles"]
    for secret in ("the-wrong-secret-0123", ""):
        proxy = await start_daemon(nursery, make_config(
            tmp_path / "proxy", f'cluster.secret="{secret}"', f"proxy.origin={roles['origin']['http']}",
            f"proxy.index={roles['index']['http']}"), ["proxy"])
        await push_refused(proxy, hidden="the-right-secret")
        await proxy.stop()
    await herd.stop()


async def test_a_proxy_whose_certificate_lacks_the_role_answers_bad_gateway(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_dev_certs(certs, {"herd": ("origin", "index"), "edge-without-role": ("agent",)})
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd")),
                              ["origin", "index"])
    roles = herd.ready["roles"]
    proxy = await start_daemon(nursery, make_config(
        tmp_path / "proxy", *tls_overrides(certs, "edge-without-role"), f"proxy.origin={roles['origin']['http']}",
        f"proxy.index={roles['index']['http']}"), ["proxy"])
    await push_refused(proxy, hidden="edge-without-role")
    await proxy.stop()
    await herd.stop()


@pytest.mark.parametrize("kind", [AnnounceReply, PeersPush])
def test_a_frame_of_a_quarter_million_peers_keeps_the_first_thousand(kind: type) -> None:
    """A tracker may fill 16 MB with ~220,000 peers: structuring them all (0.8 s) and handing them
    to libtorrent (1.3 s more) blocked an agent's event loop for each such frame."""
    peers = tuple(Peer(f"{n:020x}", f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1 + n % 65535, True)
                  for n in range(200_000))
    frame = AnnounceReply(1, "ab" * 32, peers) if kind is AnnounceReply else PeersPush("ab" * 32, peers)
    decoded = decode(encode(frame), TO_PEER, MAX_REPLY)
    assert decoded.peers == peers[:MAX_PEERS] and MAX_PEERS == 1000


async def test_metainfo_the_tracker_garbled_is_bad_gateway(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Metainfo that does not parse (garbage, another blob's torrent) is the tracker's fault: 502
    naming it, not 500 INTERNAL (a bug of ours); the agent serves on and caches nothing."""
    origin = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        other = await upload_blob(client, NS, random_bytes(70_000, seed=5))
        another_torrent = (await client.get(f"{blob_path(NS, other)}/metainfo")).content
    await origin.stop()
    answers = iter([b"d4:infoi1ee", b"not bencode at all", another_torrent])

    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                frame = msgpack.unpackb(await ws.get_message())
                if frame["t"] == "metainfo_request":
                    await ws.send_message(encode(MetainfoReply(frame["b"]["request_id"], next(answers))))
        except ConnectionClosed:
            pass

    server = await nursery.start(partial(serve_websocket, handle, "127.0.0.1", 0, ssl_context=None))
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"agent.tracker=127.0.0.1:{server.port}"),
                               ["agent"])
    wanted = digest_of(b"what the agent asks for")
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        for _ in range(3):
            response = await client.get(blob_path(NS, wanted))
            assert_error(response, 502, "BAD_GATEWAY")
            assert "tracker" in response.json()["errors"][0]["message"], response.text
        assert (await client.get("/health")).status_code == 200
    assert not list((tmp_path / "agent").rglob("*.torrent")), "nothing invalid was cached"
    await agent.stop()
