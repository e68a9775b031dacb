"""Bounded resources and answers that give nothing away: a huge page size is a 400 on every port
that takes one, a DELETE of an upload during its PATCH ends both with clear answers and leaves
nothing behind, and an internal error answers a fixed message with an id the log has, never a
path or an exception's text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.origin.helpers import RawRequest, assert_error, blob_path, digest_of
from tests.proxy.helpers import push_image

HUGE = "99999999999999999999"


@attrs.frozen
class Cluster:
    herd: RunningDaemon
    agent: RunningDaemon
    root: Path


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Cluster]:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}"),
        ["agent"])
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30) as proxy:
        await push_image(proxy, "ok/app", "1", [b"a layer"])
    yield Cluster(herd, agent, tmp_path)
    await agent.stop()
    await herd.stop()


def assert_clean(response: httpx.Response, root: Path) -> None:
    """No path of the test's directories, no traceback, no exception type in the answer."""
    text = response.text
    for leak in (str(root), "/tmp", "Traceback", "Error:", "Errno"):
        assert leak not in text, (leak, text)


@pytest.mark.parametrize("n", [HUGE, "10001", "1" * 5000, "²", "-1", "0x10"])
async def test_a_bad_page_size_is_400_on_every_port(cluster: Cluster, n: str) -> None:
    ports = [
        (cluster.herd.url("index"), ["/repositories", "/repositories/ok/app/tags"]),
        (cluster.herd.url("proxy"), ["/v2/_catalog", "/v2/ok/app/tags/list"]),
        (cluster.agent.url("agent", "registry"), ["/v2/_catalog", "/v2/ok/app/tags/list"]),
    ]
    for base, paths in ports:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for path in paths:
                response = await client.get(path, params={"n": n})
                assert_error(response, 400, "PAGINATION_NUMBER_INVALID")
                assert_clean(response, cluster.root)
                # The largest page allowed is served.
                assert (await client.get(path, params={"n": "10000"})).status_code == 200, (base, path)


async def delete_during_patch(origin: str, patch_path: str, delete_path: str, root: Path,
                              uploads: Path, *, kraken: bool = True) -> None:
    """Start a PATCH, DELETE its upload halfway, then send the rest of the PATCH's body."""
    data = bytes(range(256)) * 4096  # 1 MiB
    half = len(data) // 2
    headers = {"Content-Length": str(len(data))}
    if kraken:
        headers["Content-Range"] = f"0,{len(data)}"
    patch = await RawRequest.open(origin.removeprefix("http://"), "PATCH", patch_path, headers)
    try:
        await patch.send(data[:half])
        await trio.sleep(0.5)  # the PATCH is being written
        async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
            deleted = await client.delete(delete_path)
            assert deleted.status_code == 204 or 400 <= deleted.status_code < 500, deleted.text
            assert_clean(deleted, root)
        try:
            await patch.send(data[half:])
        except trio.BrokenResourceError:  # the server answered and closed first
            pass
        with trio.fail_after(10):
            status, body = await patch.response()
    finally:
        await patch.aclose()
    assert status in (400, 404), (status, body)
    assert b"BLOB_UPLOAD_UNKNOWN" in body or b"BLOB_UPLOAD_INVALID" in body, body
    for leak in (str(root).encode(), b"/tmp", b"Traceback", b"Errno"):
        assert leak not in body, (leak, body)
    assert list(uploads.iterdir()) == [], "the upload left nothing behind"


async def test_delete_during_patch_is_a_4xx_without_a_path(cluster: Cluster) -> None:
    origin = cluster.herd.url("origin")
    uploads = Path(cluster.herd.config.layout.uploads)
    async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
        # A session of the proxy's kind...
        uid = (await client.post("/uploads", params={"namespace": "ok/app"})).headers["location"]
        await delete_during_patch(origin, f"/uploads/{uid}?namespace=ok%2Fapp",
                                  f"/uploads/{uid}?namespace=ok%2Fapp", cluster.root, uploads)
        # ... and a Kraken upload of a known digest.
        digest = digest_of(b"whatever")
        started = await client.post(f"{blob_path('ok/app', digest)}/uploads")
        path = f"{blob_path('ok/app', digest)}/uploads/{started.headers['location']}"
        sessions = f"/uploads/{started.headers['location']}?namespace=ok%2Fapp"
        await delete_during_patch(origin, path, sessions, cluster.root, uploads)
        assert (await client.get("/health")).status_code == 200, "still serving"
    # Through the proxy, which streams the PATCH into the origin's session.
    proxy = cluster.herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as registry:
        location = (await registry.post("/v2/ok/app/blobs/uploads/")).headers["location"]
        await delete_during_patch(proxy, location, location, cluster.root, uploads, kraken=False)
        assert (await registry.get("/v2/ok/app/manifests/1")).status_code == 200, "still serving"


async def test_an_internal_error_answers_an_id_the_log_has(cluster: Cluster,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A bug or an OS error (here: the uploads directory replaced by a file) is a 500 with a fixed
    message and an error id; the traceback, with the path, is in the log under that id."""
    uploads = Path(cluster.herd.config.layout.uploads)
    uploads.rmdir()
    uploads.write_bytes(b"not a directory")
    caplog.set_level(logging.ERROR)
    async with httpx.AsyncClient(base_url=cluster.herd.url("origin"), timeout=30) as client:
        response = await client.post("/uploads", params={"namespace": "ok/app"})
    assert_error(response, 500, "INTERNAL")
    assert_clean(response, cluster.root)
    assert "NotADirectory" not in response.text and str(uploads) not in response.text
    error_id = response.json()["errors"][0]["detail"]["error_id"]
    assert error_id in response.json()["errors"][0]["message"]
    logged = [record for record in caplog.records if error_id in record.getMessage()]
    assert logged and logged[0].exc_info is not None, "the log has the traceback under the id"
    assert "NotADirectoryError" in caplog.text and str(uploads) in caplog.text
    # Through the proxy, the push fails as the origin's 500 did: no path there either.
    async with httpx.AsyncClient(base_url=cluster.herd.url("proxy"), timeout=30) as proxy:
        relayed = await proxy.post("/v2/ok/app/blobs/uploads/")
    assert relayed.status_code == 500
    assert_clean(relayed, cluster.root)
