"""The origin's upload and download API over real HTTP, with every error it promises."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningDaemon, blob_files, files_under, make_config, random_bytes, start_daemon
from tests.origin.helpers import (
    RawRequest,
    assert_error,
    blob_path,
    commit,
    digest_of,
    patch,
    start_upload,
    upload_blob,
)

NS = "library/foo"


async def test_chunked_upload_in_order_then_download(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(5 * 1024 * 1024 + 17)
    digest = await upload_blob(origin_client, NS, data, chunk=1 << 20)

    response = await origin_client.get(blob_path(NS, digest))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-type"] == "application/octet-stream"

    head = await origin_client.head(blob_path(NS, digest))
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""


async def test_namespace_may_arrive_encoded_or_not(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(1000, seed=1)
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)  # sent as library%2Ffoo
    plain = f"/namespace/{NS}/blobs/{digest}/uploads/{uid}"
    response = await origin_client.patch(plain, content=data, headers={"Content-Range": f"0,{len(data)}"})
    assert response.status_code == 200, response.text
    assert (await origin_client.put(plain)).status_code == 200
    assert (await origin_client.get(f"/namespace/{NS}/blobs/{digest}")).content == data


async def test_ranged_downloads(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(10_000, seed=2)
    path = blob_path(NS, await upload_blob(origin_client, NS, data))

    response = await origin_client.get(path, headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == data[100:200]
    assert response.headers["content-range"] == "bytes 100-199/10000"

    assert (await origin_client.get(path, headers={"Range": "bytes=9990-"})).content == data[9990:]
    assert (await origin_client.get(path, headers={"Range": "bytes=-5"})).content == data[-5:]

    response = await origin_client.get(path, headers={"Range": "bytes=10000-"})
    assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["content-range"] == "bytes */10000"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 300_000), cuts=st.lists(st.integers(1, 299_999), max_size=12),
       order_seed=st.integers(0, 2**32))
async def test_chunks_in_any_order_and_size(tmp_path: Path, size: int, cuts: list[int], order_seed: int) -> None:
    data = random_bytes(size, seed=order_seed)
    bounds = sorted({0, size, *(c for c in cuts if c < size)})
    chunks = list(zip(bounds, bounds[1:], strict=False))
    random.Random(order_seed).shuffle(chunks)
    digest = digest_of(data)
    # Each example runs in its own Trio run, so it starts its own daemon.
    async with trio.open_nursery() as nursery:
        origin = await start_daemon(nursery, make_config(Path(tempfile.mkdtemp(dir=tmp_path))), ["origin"])
        async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
            uid = await start_upload(client, NS, digest)
            for start, end in chunks:
                response = await patch(client, NS, digest, uid, data[start:end], start)
                assert response.status_code == 200, response.text
            assert (await commit(client, NS, digest, uid)).status_code == 200
            assert (await client.get(blob_path(NS, digest))).content == data
        await origin.stop()


async def test_empty_blob(origin_client: httpx.AsyncClient) -> None:
    digest = digest_of(b"")
    uid = await start_upload(origin_client, NS, digest)
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200
    response = await origin_client.get(blob_path(NS, digest))
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize("digest", [
    "sha256:abc",
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 64,   # a sha256's length under sha512
    "sha384:" + "a" * 96,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "notadigest",
    "sha256:" + "g" * 64,
    "sha256:" + "a" * 65,
])
async def test_malformed_digest_is_400(origin_client: httpx.AsyncClient, origin: RunningDaemon,
                                       digest: str) -> None:
    before = files_under(Path(origin.config.data_dir))
    for method, suffix in [("GET", ""), ("HEAD", ""), ("POST", "/uploads"),
                           ("PATCH", "/uploads/00000000-0000-4000-8000-000000000000"),
                           ("PUT", "/uploads/00000000-0000-4000-8000-000000000000")]:
        response = await origin_client.request(method, f"/namespace/ns/blobs/{digest}{suffix}")
        assert response.status_code == 400, (method, response.status_code)
        if method != "HEAD":
            assert_error(response, 400, "DIGEST_INVALID")
    assert files_under(Path(origin.config.data_dir)) == before


@pytest.mark.parametrize("namespace", ["..%2F..%2Fetc", "a%2F%2Fb", ".hidden", "a%2F..", "x" * 300, "sp%20ace"])
async def test_invalid_namespace_is_400(origin_client: httpx.AsyncClient, namespace: str) -> None:
    digest = digest_of(b"x")
    response = await origin_client.post(f"/namespace/{namespace}/blobs/{digest}/uploads")
    assert_error(response, 400, "NAME_INVALID")


async def test_overlapping_chunk_is_416_and_changes_nothing(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(3000, seed=3)
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)
    assert (await patch(origin_client, NS, digest, uid, data[1000:2000], 1000)).status_code == 200
    for start, end in [(500, 1500), (1500, 2500), (1000, 2000), (0, 3000)]:
        response = await patch(origin_client, NS, digest, uid, b"\0" * (end - start), start)
        assert_error(response, 416, "RANGE_INVALID")
    # The refused chunks wrote nothing: the original bytes commit intact.
    for start, end in [(0, 1000), (2000, 3000)]:
        assert (await patch(origin_client, NS, digest, uid, data[start:end], start)).status_code == 200
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200
    assert (await origin_client.get(blob_path(NS, digest))).content == data


async def test_commit_with_a_gap_is_416_and_the_upload_goes_on(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(3000, seed=4)
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)
    await patch(origin_client, NS, digest, uid, data[:1000], 0)
    await patch(origin_client, NS, digest, uid, data[2000:], 2000)
    response = await commit(origin_client, NS, digest, uid)
    assert_error(response, 416, "RANGE_INVALID")
    assert response.json()["errors"][0]["detail"]["missing"] == [[1000, 2000]]
    assert (await origin_client.get(blob_path(NS, digest))).status_code == 404
    await patch(origin_client, NS, digest, uid, data[1000:2000], 1000)
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200


async def test_unknown_upload_id_is_404(origin_client: httpx.AsyncClient) -> None:
    data = b"hello"
    digest = digest_of(data)
    for uid in ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "x" * 500,
                "ABCDEF00-0000-4000-8000-000000000000"]:
        assert_error(await patch(origin_client, NS, digest, uid, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(await commit(origin_client, NS, digest, uid), 404, "BLOB_UPLOAD_UNKNOWN")
    # An upload id is bound to its digest and namespace.
    uid = await start_upload(origin_client, NS, digest)
    other = digest_of(b"other")
    assert_error(await patch(origin_client, NS, other, uid, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await patch(origin_client, "other/ns", digest, uid, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_wrong_content_is_400_on_commit_and_discards_the_upload(
        origin_client: httpx.AsyncClient, origin: RunningDaemon) -> None:
    digest = digest_of(b"the real content")
    uid = await start_upload(origin_client, NS, digest)
    await patch(origin_client, NS, digest, uid, b"something else!!", 0)
    response = await commit(origin_client, NS, digest, uid)
    assert_error(response, 400, "DIGEST_INVALID")
    assert blob_files(Path(origin.config.data_dir)) == {}
    assert_error(await patch(origin_client, NS, digest, uid, b"x", 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert list((Path(origin.config.data_dir) / "uploads").iterdir()) == []
    # A fresh upload of the right bytes still works.
    assert await upload_blob(origin_client, NS, b"the real content") == digest


async def test_unknown_blob_is_404(origin_client: httpx.AsyncClient) -> None:
    path = blob_path(NS, digest_of(b"never uploaded"))
    assert_error(await origin_client.get(path), 404, "BLOB_UNKNOWN")
    assert (await origin_client.head(path)).status_code == 404


async def test_second_upload_of_a_held_blob_is_409(origin_client: httpx.AsyncClient) -> None:
    digest = await upload_blob(origin_client, NS, b"once")
    assert_error(await origin_client.post(f"{blob_path(NS, digest)}/uploads"), 409, "BLOB_EXISTS")


@pytest.mark.parametrize("content_range", [None, "", "bytes 0-4/5", "0,", "a,b", "-1,4", "0;5"])
async def test_missing_or_malformed_content_range_is_400(origin_client: httpx.AsyncClient,
                                                         content_range: str | None) -> None:
    digest = digest_of(b"12345")
    uid = await start_upload(origin_client, NS, digest)
    headers = {} if content_range is None else {"Content-Range": content_range}
    response = await origin_client.patch(f"{blob_path(NS, digest)}/uploads/{uid}", content=b"12345",
                                         headers=headers)
    assert_error(response, 400, "BLOB_UPLOAD_INVALID")


async def test_empty_or_reversed_range_is_416(origin_client: httpx.AsyncClient) -> None:
    digest = digest_of(b"12345")
    uid = await start_upload(origin_client, NS, digest)
    for content_range in ["3,3", "4,2"]:
        response = await origin_client.patch(f"{blob_path(NS, digest)}/uploads/{uid}", content=b"",
                                             headers={"Content-Range": content_range})
        assert_error(response, 416, "RANGE_INVALID")


async def test_body_not_matching_its_range_is_400(origin_client: httpx.AsyncClient) -> None:
    data = b"0123456789"
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)
    path = f"{blob_path(NS, digest)}/uploads/{uid}"
    for body in [data[:5], data + b"extra"]:
        response = await origin_client.patch(path, content=body, headers={"Content-Range": "0,10"})
        assert_error(response, 400, "SIZE_INVALID")
    # Neither attempt was recorded.
    assert (await patch(origin_client, NS, digest, uid, data, 0)).status_code == 200
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200


async def test_through_must_be_a_boolean(origin_client: httpx.AsyncClient) -> None:
    digest = digest_of(b"abc")
    uid = await start_upload(origin_client, NS, digest)
    await patch(origin_client, NS, digest, uid, b"abc", 0)
    response = await origin_client.put(f"{blob_path(NS, digest)}/uploads/{uid}", params={"through": "maybe"})
    assert_error(response, 400, "BAD_REQUEST")
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200


async def test_unknown_paths_and_methods(origin_client: httpx.AsyncClient) -> None:
    assert_error(await origin_client.get("/nope"), 404, "NOT_FOUND")
    assert_error(await origin_client.delete("/health"), 405, "UNSUPPORTED")
    response = await origin_client.get("/health")
    assert response.status_code == 200 and response.text.strip() == "OK"


async def test_upload_over_the_size_limit_is_413(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(tmp_path, "origin.max_upload_size=1000"), ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        data = random_bytes(1500)
        digest = digest_of(data)
        uid = await start_upload(client, NS, digest)
        assert_error(await patch(client, NS, digest, uid, data[1000:], 1000), 413, "TOO_LARGE")
        assert (await patch(client, NS, digest, uid, data[:1000], 0)).status_code == 200
    await origin.stop()


async def test_client_hanging_up_mid_chunk_records_nothing(origin_client: httpx.AsyncClient,
                                                           origin: RunningDaemon) -> None:
    data = random_bytes(200_000, seed=5)
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)
    raw = await RawRequest.open(origin.ready["roles"]["origin"]["http"], "PATCH",
                                f"{blob_path(NS, digest)}/uploads/{uid}",
                                {"Content-Range": f"0,{len(data)}", "Content-Length": str(len(data))})
    await raw.send(data[:50_000])
    await trio.sleep(0.2)
    await raw.aclose()
    # Were the half-sent chunk recorded, this PATCH of the same range would be refused with 416.
    with trio.fail_after(10):
        while (response := await patch(origin_client, NS, digest, uid, data, 0)).status_code == 416:
            await trio.sleep(0.05)  # the server may not have noticed the hang-up yet
    assert response.status_code == 200, response.text
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200
    assert (await origin_client.get(blob_path(NS, digest))).content == data


async def test_stalled_body_is_abandoned_after_the_idle_timeout(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(tmp_path, "http.idle_timeout=0.5"), ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        data = random_bytes(10_000)
        digest = digest_of(data)
        uid = await start_upload(client, NS, digest)
        raw = await RawRequest.open(origin.ready["roles"]["origin"]["http"], "PATCH",
                                    f"{blob_path(NS, digest)}/uploads/{uid}",
                                    {"Content-Range": "0,10000", "Content-Length": "10000"})
        await raw.send(data[:100])
        with trio.fail_after(30):
            status, body = await raw.response()
        await raw.aclose()
        assert status == 400 and b"stalled" in body
        assert (await patch(client, NS, digest, uid, data, 0)).status_code == 200
    await origin.stop()


async def test_requests_in_parallel_to_one_upload(origin_client: httpx.AsyncClient) -> None:
    data = random_bytes(8 << 20, seed=6)
    digest = digest_of(data)
    uid = await start_upload(origin_client, NS, digest)
    piece = 1 << 20
    statuses = []

    async def send(start: int) -> None:
        statuses.append((await patch(origin_client, NS, digest, uid, data[start:start + piece], start)).status_code)

    async with trio.open_nursery() as nursery:
        for start in range(0, len(data), piece):
            nursery.start_soon(send, start)
    assert statuses == [200] * 8
    assert (await commit(origin_client, NS, digest, uid)).status_code == 200
    assert (await origin_client.get(blob_path(NS, digest))).content == data


async def test_an_uploads_status_says_where_the_next_chunk_starts(nursery: trio.Nursery, tmp_path: Path) -> None:
    """GET (and HEAD) of an upload: 204 with Upload-Size, for the writer only (the cluster
    secret, when the origin has one); an unknown, another digest's or a committed one is 404."""
    origin = await start_daemon(nursery, make_config(tmp_path / "origin", "cluster.secret=the-secret"), ["origin"])
    data = random_bytes(3000, seed=9)
    digest = digest_of(data)
    writer = {"Authorization": "Bearer the-secret"}
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=30, headers=writer) as client, \
            httpx.AsyncClient(base_url=origin.url("origin"), timeout=30) as stranger:
        uid = await start_upload(client, NS, digest)
        status = f"{blob_path(NS, digest)}/uploads/{uid}"
        for method in ("GET", "HEAD"):
            answer = await client.request(method, status)
            assert answer.status_code == 204 and answer.headers["Upload-Size"] == "0", answer.text
        assert (await patch(client, NS, digest, uid, data[:1000], 0)).status_code == 200
        assert (await client.get(status)).headers["Upload-Size"] == "1000"
        assert_error(await stranger.get(status), 401, "UNAUTHORIZED")
        assert_error(await client.get(f"{blob_path(NS, digest_of(b'x'))}/uploads/{uid}"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(await client.get(f"{blob_path(NS, digest)}/uploads/not-an-id"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert (await patch(client, NS, digest, uid, data[1000:], 1000)).status_code == 200
        assert (await commit(client, NS, digest, uid)).status_code == 200
        assert_error(await client.get(status), 404, "BLOB_UPLOAD_UNKNOWN")
