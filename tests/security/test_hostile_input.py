"""Hostile input against every HTTP port: a clear error in the port's own format, nothing changed,
no partial blob under a digest, no file outside the data directories, and the daemon serving on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, blob_files, make_config, start_daemon
from tests.proxy.helpers import digest_of, push_blob, push_image

GOOD = b"a committed layer"


@attrs.frozen
class Herd:
    daemon: RunningDaemon
    root: Path  # the test's directory: data directories live below it, and nothing else may appear

    @property
    def proxy(self) -> str:
        return self.daemon.url("proxy")

    @property
    def origin(self) -> str:
        return self.daemon.url("origin")


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Herd]:
    daemon = await start_daemon(nursery, make_config(tmp_path / "herd", "origin.max_upload_size=1MiB",
                                                     "proxy.max_manifest_size=64KiB",
                                                     "http.keep_alive_timeout=1"),
                                ["origin", "tracker", "index", "proxy"])
    async with httpx.AsyncClient(base_url=daemon.url("proxy"), timeout=30) as client:
        await push_image(client, "ok/app", "1", [GOOD])
    yield Herd(daemon, tmp_path)


def files_outside_data(root: Path) -> set[str]:
    data = root / "herd"
    return {str(p.relative_to(root)) for p in root.rglob("*") if data not in p.parents and p != data}


def assert_store_intact(herd: Herd) -> None:
    """Every blob under a digest holds exactly that digest's bytes (sha256: 64 hex digits, sha512: 128)."""
    for hex_, _ in blob_files(herd.root / "herd").items():
        algorithm = "sha256" if len(hex_) == 64 else "sha512"
        path = herd.root / "herd" / "blobs" / algorithm / hex_[:2] / hex_
        assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == hex_, f"a blob under {hex_} is not it"


async def assert_unharmed(herd: Herd, before: set[str], outside: set[str]) -> None:
    assert_store_intact(herd)
    assert set(blob_files(herd.root / "herd")) == before, "no blob appeared or went"
    assert files_outside_data(herd.root) == outside, "nothing was written outside the data directory"
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        assert (await client.get("/v2/ok/app/manifests/1")).status_code == 200, "still serving"


def oci_error(response: httpx.Response, status: int, *codes: str) -> None:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    if response.request.method != "HEAD":
        body = response.json()
        assert body["errors"] and body["errors"][0]["code"] in codes, body


TRAVERSALS = ["..%2F..%2Fetc", "a%2F..%2F..%2Fb", "UPPER/case", "a//b", "-lead/x", "x%00y", "%2e%2e/x", "a/..",
              "sp ace/x"]


@pytest.mark.parametrize("name", TRAVERSALS)
async def test_bad_repository_names_are_400_name_invalid_or_404(herd: Herd, name: str) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        for method, path in (("GET", f"/v2/{name}/manifests/latest"), ("PUT", f"/v2/{name}/manifests/latest"),
                             ("POST", f"/v2/{name}/blobs/uploads/"), ("GET", f"/v2/{name}/tags/list"),
                             ("POST", f"/v2/{name}/blobs/uploads/?digest={digest_of(GOOD)}")):
            response = await client.request(method, path, content=GOOD if method != "GET" else None)
            oci_error(response, response.status_code, "NAME_INVALID", "NAME_UNKNOWN", "NOT_FOUND",
                      "MANIFEST_UNKNOWN", "MANIFEST_INVALID")
            assert response.status_code in (400, 404), (method, path, response.status_code)
    await assert_unharmed(herd, before, outside)


@pytest.mark.parametrize(("reference", "codes"), [
    ("..%2F..%2Fevil", ("TAG_INVALID", "DIGEST_INVALID", "NOT_FOUND")),
    ("sha256:..%2F..%2Fevil", ("DIGEST_INVALID", "NOT_FOUND")),
    ("md5:d41d8cd98f00b204e9800998ecf8427e", ("DIGEST_INVALID", "UNSUPPORTED")),
    ("sha384:" + "ab" * 48, ("DIGEST_INVALID", "UNSUPPORTED")),
    ("sha512:" + "ab" * 32, ("DIGEST_INVALID",)),   # a sha256's length under sha512
    ("sha512:" + "ab" * 63 + "..", ("DIGEST_INVALID", "NOT_FOUND")),
    ("x" * 129, ("TAG_INVALID",)),
])
async def test_bad_tags_and_digests_change_nothing(herd: Herd, reference: str, codes: tuple[str, ...]) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        put = await client.put(f"/v2/ok/app/manifests/{reference}", content=b"{}",
                               headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert put.status_code in (400, 404)
        oci_error(put, put.status_code, *codes, "MANIFEST_INVALID")
        blob = await client.get(f"/v2/ok/app/blobs/{reference}")
        assert blob.status_code in (400, 404)
        oci_error(blob, blob.status_code, *codes, "DIGEST_INVALID", "BLOB_UNKNOWN")  # blobs take digests only
        mono = await client.post("/v2/ok/app/blobs/uploads/", params={"digest": reference}, content=GOOD)
        oci_error(mono, 400, *codes, "DIGEST_INVALID")
    await assert_unharmed(herd, before, outside)


async def test_bad_upload_ids_and_ranges_and_sizes(herd: Herd) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        for uid in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 300, "00000000-0000-0000-0000-000000000000"):
            oci_error(await client.patch(f"/v2/ok/app/blobs/uploads/{uid}", content=b"x"), 404,
                      "BLOB_UPLOAD_UNKNOWN", "NOT_FOUND")
        start = await client.post("/v2/ok/app/blobs/uploads/")
        location = start.headers["location"]
        assert (await client.patch(location, content=b"0123456789",
                                   headers={"Content-Range": "0-9"})).status_code == 202
        for bad in ("20-29", "5-14", "0-99999999999999999999999", "9-0", "10-", "ten-twenty"):
            response = await client.patch(location, content=b"0123456789", headers={"Content-Range": bad})
            oci_error(response, 416, "BLOB_UPLOAD_INVALID", "RANGE_INVALID", "SIZE_INVALID")
        # Over the configured upload limit (1 MiB here).
        too_big = await client.patch(location, content=os.urandom((1 << 20) + 1))
        oci_error(too_big, 413, "TOO_LARGE")
        # A body that does not match its digest.
        wrong = await client.put(location, params={"digest": digest_of(b"something else")})
        oci_error(wrong, 400, "DIGEST_INVALID")
        mono = await client.post("/v2/ok/app/blobs/uploads/", params={"digest": digest_of(b"other")}, content=GOOD)
        oci_error(mono, 400, "DIGEST_INVALID")
    await assert_unharmed(herd, before, outside)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "MANIFEST_INVALID"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', 400, "MANIFEST_INVALID"),
    (b"[]", 400, "MANIFEST_INVALID"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, 400, "MANIFEST_INVALID"),  # deep nesting
    (b" " * (64 << 10) + b"{}", 413, "SIZE_INVALID"),  # over proxy.max_manifest_size
])
async def test_bad_manifests_are_refused(herd: Herd, body: bytes, status: int, code: str) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        response = await client.put("/v2/ok/app/manifests/2", content=body,
                                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        oci_error(response, status, code, "MANIFEST_INVALID")
        assert (await client.get("/v2/ok/app/manifests/2")).status_code == 404, "no tag was written"
    await assert_unharmed(herd, before, outside)


async def test_origin_namespaces_that_escape_are_400(herd: Herd) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    async with httpx.AsyncClient(base_url=herd.origin, timeout=30) as client:
        for namespace in ("..%2F..%2Ftmp", "%2e%2e", "a%2F..%2F..%2Fb", "%00"):
            response = await client.post(f"/namespace/{namespace}/blobs/{digest_of(GOOD)}/uploads")
            assert response.status_code in (400, 404), (namespace, response.text)
            response = await client.get(f"/namespace/{namespace}/blobs/{digest_of(GOOD)}")
            assert response.status_code in (400, 404), (namespace, response.text)
    await assert_unharmed(herd, before, outside)


async def test_clients_that_vanish_mid_transfer_leave_nothing_behind(herd: Herd) -> None:
    before, outside = set(blob_files(herd.root / "herd")), files_outside_data(herd.root)
    host, port = herd.daemon.ready["roles"]["proxy"]["http"].rsplit(":", 1)
    data = os.urandom(512 << 10)
    # Mid-upload: a monolithic POST promising 512 KiB that stops after 100 KiB.
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(f"POST /v2/ok/app/blobs/uploads/?digest={digest_of(data)} HTTP/1.1\r\n"
                          f"Host: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[:100 << 10])
    await stream.aclose()
    # Mid-download: read a little of a blob, then hang up.
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        await push_blob(client, "ok/app", data)
        async with client.stream("GET", f"/v2/ok/app/blobs/{digest_of(data)}") as response:
            async for _ in response.aiter_raw(1024):
                break
    await trio.sleep(0.5)
    before.add(digest_of(data).removeprefix("sha256:"))  # the complete push, the only new blob
    await assert_unharmed(herd, before, outside)


async def test_a_client_trickling_its_headers_is_cut_off(herd: Herd) -> None:
    """A byte at a time, headers that never end, do not hold a connection: the keep-alive timeout
    (1 s here) closes it. The server closes first; the deadline only stops a hung test."""
    host, port = herd.daemon.ready["roles"]["proxy"]["http"].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))

    async def trickle() -> None:
        try:
            await stream.send_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while True:
                await stream.send_all(b"a")
                await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            try:
                received = await stream.receive_some()
                if received:  # a 408, then the close
                    assert received.startswith(b"HTTP/1.1 408"), received
                    assert await stream.receive_some() == b""
            except trio.BrokenResourceError:
                pass  # reset: the server closed with trickled bytes unread
            nursery.cancel_scope.cancel()
    await stream.aclose()
    async with httpx.AsyncClient(base_url=herd.proxy, timeout=30) as client:
        assert (await client.get("/v2/")).status_code == 200
