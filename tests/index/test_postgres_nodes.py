"""Index nodes on PostgreSQL through real daemons: two nodes sharing one database behind proxies,
a database that goes down (a clear 503, no secret anywhere) and comes back, a lock held elsewhere,
a node killed mid-write."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from swarmreg.digest import Digest
from swarmreg.errors import UNAVAILABLE, SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.index.postgres_store import PostgresIndexStore
from tests.conftest import make_config, start_daemon
from tests.proxy.helpers import DOCKER_MANIFEST, push_image
from tests.servers.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.slow


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (it stops it)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_a_tag_pushed_through_one_index_node_is_pulled_through_another(
        nursery: trio.Nursery, tmp_path: Path, postgres_database: str) -> None:
    # Node A: a whole herd whose proxy pushes into index A. Node B: an index only, and a proxy of
    # its own that reads index B (and A's origin for the bytes).
    a = await start_daemon(nursery, make_config(tmp_path / "a", f"index.database={postgres_database}"),
                           ["origin", "tracker", "index", "proxy"])
    b = await start_daemon(nursery, make_config(tmp_path / "b", f"index.database={postgres_database}"), ["index"])
    origin, index_b = a.ready["roles"]["origin"]["http"], b.ready["roles"]["index"]["http"]
    reader = await start_daemon(nursery, make_config(tmp_path / "reader", f"proxy.index={index_b}",
                                                     f"proxy.origin={origin}"), ["proxy"])
    async with httpx.AsyncClient(base_url=a.url("proxy"), timeout=30) as proxy_a, \
            httpx.AsyncClient(base_url=reader.url("proxy"), timeout=30) as proxy_b:
        digest, manifest = await push_image(proxy_a, "team/app", "v1", [b"a layer of bytes"])
        async with IndexClient(index_b) as client:
            assert await client.get_tag("team/app", "v1") == digest
        pulled = await proxy_b.get("/v2/team/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
        assert (pulled.status_code, pulled.content) == (200, manifest)
        assert pulled.headers["docker-content-digest"] == digest
        # A delete through B is seen through A.
        assert (await proxy_b.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202
        assert (await proxy_a.get("/v2/team/app/manifests/v1")).status_code == 404
    for daemon in (reader, b, a):
        await daemon.stop()


async def test_a_database_that_goes_down_is_a_503_without_secrets_until_it_returns(
        nursery: trio.Nursery, tmp_path: Path, own_server: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = own_server.create_database()
    index = await start_daemon(nursery, make_config(tmp_path / "index", f"index.database={url}"), ["index"])
    async with httpx.AsyncClient(base_url=index.url("index"), timeout=30) as http:
        manifest = "sha256:" + "ab" * 32
        assert (await http.put(f"/repositories/app/manifests/{manifest}",
                               json={"media_type": DOCKER_MANIFEST, "size": 10})).status_code == 201
        assert (await http.put("/repositories/app/tags/v1", json={"digest": manifest})).status_code == 201

        own_server.stop()
        answers = [await http.get("/repositories/app/tags/v1"),
                   await http.put("/repositories/app/tags/v2", json={"digest": manifest}),
                   await http.get("/repositories")]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
            for secret in (PASSWORD, url, str(own_server.port), "Traceback"):
                assert secret not in answer.text
        assert (await http.get("/health")).status_code == 200, "the node itself serves on"

        own_server.start()
        answer = await http.get("/repositories/app/tags/v1")  # the first request after: no 503
        assert (answer.status_code, answer.json()["digest"]) == (200, manifest)
        assert (await http.put("/repositories/app/tags/v2", json={"digest": manifest})).status_code == 201
    await index.stop()
    for record in caplog.records:
        assert PASSWORD not in record.getMessage() and record.exc_info is None, record.getMessage()
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("swarmreg")]
    assert sum("failed" in message for message in messages) == 1, "logged once, when it went"
    assert any("answers again" in message for message in messages)


async def test_a_lock_held_elsewhere_is_a_503_after_the_lock_timeout_not_a_hang(postgres_database: str,
                                                                                tmp_path: Path) -> None:
    url = f"{postgres_database}?options=-c%20lock_timeout%3D200"
    async with PostgresIndexStore(url, spool_dir=tmp_path) as store:
        await store.link_blob("r", Digest.of(b"b"), 1)
        with psycopg.connect(postgres_database) as other:  # an operator's session, in a transaction
            other.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
            with trio.fail_after(20), pytest.raises(SwarmregError) as refused:
                await store.blob_size("r", Digest.of(b"b"))
            assert refused.value.code is UNAVAILABLE
        assert await store.blob_size("r", Digest.of(b"b")) == 1



async def test_a_killed_index_node_leaves_its_acknowledged_writes_and_no_lock_behind(
        spawn: Any, postgres_database: str) -> None:
    a = await spawn("a", ["index"], f"index.database={postgres_database}")
    b = await spawn("b", ["index"], f"index.database={postgres_database}")
    acknowledged: list[int] = []
    enough = trio.Event()

    async def writer(client: IndexClient, w: int) -> None:
        for i in itertools.count(w, 8):
            manifest = Digest.of(f"m{i}".encode())
            try:
                await client.put_manifest("r", manifest, media_type=DOCKER_MANIFEST, size=i)
                await client.put_tag("r", f"t{i}", manifest)
            except SwarmregError:  # the node is gone
                return
            acknowledged.append(i)
            if len(acknowledged) >= 40:
                enough.set()

    async with IndexClient(a.address("index"), attempts=1) as client_a, trio.open_nursery() as nursery:
        for w in range(8):
            nursery.start_soon(writer, client_a, w)
        await enough.wait()
        a.kill()  # mid-write: some of the writers' transactions are open
    async with IndexClient(b.address("index")) as client_b:
        with trio.fail_after(15):
            for i in acknowledged:
                assert await client_b.get_tag("r", f"t{i}") == str(Digest.of(f"m{i}".encode()))
            # The rows a killed transaction was writing are free: every tag can be moved now.
            last = Digest.of(b"m0")
            for i in range(max(acknowledged) + 8):
                if await client_b.get_manifest("r", Digest.of(f"m{i}".encode())) is not None:
                    await client_b.put_tag("r", f"t{i}", last)
