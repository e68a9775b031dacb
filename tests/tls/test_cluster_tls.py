"""A cluster on mutual TLS: the nodes talk, and nobody without a cluster certificate gets in."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from swarmreg.config import ConfigError
from swarmreg.devcluster import tls_overrides
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_image
from tests.tls.conftest import client_context


async def start_cluster(nursery: trio.Nursery, tmp_path: Path, certs: Path) -> tuple[RunningDaemon, RunningDaemon]:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd"),
                                                   "tracker.handshake_timeout=2"),
                              ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", *tls_overrides(certs, "agent"), f"agent.tracker={roles['tracker']['ws']}",
        f"agent.index={roles['index']['http']}"), ["agent"])
    return herd, agent


async def upgrade_answer(host: str, port: int, context: ssl.SSLContext) -> bytes:
    """What the tracker answers a websocket upgrade over TLS with ``context``: its first bytes,
    or b"" when it refuses the client (the TLS alert or the close must come within 5 s)."""
    with trio.fail_after(5):
        stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
        try:
            await stream.send_all(b"GET /announce HTTP/1.1\r\nHost: tracker\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  b"Sec-WebSocket-Version: 13\r\n\r\n")
            return await stream.receive_some()
        except trio.BrokenResourceError:
            return b""
        finally:
            await trio.aclose_forcefully(stream)


async def test_push_and_pull_through_a_tls_cluster(nursery: trio.Nursery, tmp_path: Path, certs: Path) -> None:
    herd, agent = await start_cluster(nursery, tmp_path, certs)
    layers = [random_bytes(3 << 20, seed=1), random_bytes(5000, seed=2)]
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        _, manifest = await push_image(proxy, "secure/app", "1", layers)
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        response = await registry.get("/v2/secure/app/manifests/1")
        assert response.status_code == 200 and response.content == manifest
        for layer in layers:
            blob = await registry.get(f"/v2/secure/app/blobs/{digest_of(layer)}")
            assert blob.status_code == 200 and blob.content == layer
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=30) as client:
        stats = (await client.get("/stats")).json()
    assert [t["complete"] for t in stats["torrents"]] == [True], "the big layer came over the peer wire"


async def test_cluster_ports_refuse_clients_without_a_cluster_certificate(
        nursery: trio.Nursery, tmp_path: Path, certs: Path) -> None:
    herd, _ = await start_cluster(nursery, tmp_path, certs)
    roles = herd.ready["roles"]
    origin, index, tracker = roles["origin"]["http"], roles["index"]["http"], roles["tracker"]["ws"]
    foreign = trustme.CA()
    foreign_context = client_context(certs, None)
    foreign.issue_cert("127.0.0.1").configure_cert(foreign_context)
    for address in (origin, index):
        for context in (client_context(certs, None), foreign_context):
            async with httpx.AsyncClient(verify=context, timeout=10) as client:
                # Refused in the handshake (TLS 1.3 clients may see it as the server hanging up).
                with pytest.raises(httpx.TransportError):
                    await client.get(f"https://{address}/health")
        async with httpx.AsyncClient(timeout=10) as client:  # plain HTTP on a TLS port gets nothing
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://{address}/health")
    host, port = tracker.rsplit(":", 1)
    for context in (client_context(certs, None), foreign_context):
        assert await upgrade_answer(host, int(port), context) == b"", "refused: no websocket, the connection closed"
    # A node's certificate gets in; the refusals changed nothing.
    async with httpx.AsyncClient(verify=client_context(certs, "stranger"), timeout=10) as client:
        for address in (origin, index):
            assert (await client.get(f"https://{address}/health")).status_code == 200
    assert (await upgrade_answer(host, int(port), client_context(certs, "stranger"))).startswith(b"HTTP/1.1 101 ")


async def test_swarm_roles_need_a_peer_certificate_with_tls(nursery: trio.Nursery, tmp_path: Path,
                                                            certs: Path) -> None:
    node_only = [o for o in tls_overrides(certs, "agent") if not o.startswith("tls.peer_")]
    with pytest.raises(ConfigError, match="tls.peer_cert"):
        await start_daemon(nursery, make_config(tmp_path / "agent", *node_only), ["agent"])
    # An index needs no peer wire.
    index = await start_daemon(nursery, make_config(tmp_path / "index", *node_only), ["index"])
    await index.stop()
