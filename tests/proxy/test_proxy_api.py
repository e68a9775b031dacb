"""The proxy's registry API over real HTTP: a herd (origin, index, proxy) in this process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.oci.manifest import MAX_MANIFEST_SIZE
from swarmreg.registry.auth import hash_password
from tests.conftest import RunningDaemon, blob_files, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error
from tests.proxy.helpers import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
)

REPO = "team/app"


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "index", "proxy"])
    yield running
    await running.stop()


@pytest.fixture
async def registry(herd: RunningDaemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as client:
        yield client


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    """A body without a Content-Length: httpx sends it chunked."""
    yield data


async def test_a_chunk_must_hold_exactly_its_content_range(registry: httpx.AsyncClient) -> None:
    started = await registry.post(f"/v2/{REPO}/blobs/uploads/")
    location = started.headers["location"]
    # The range says one byte, the body has three: refused, as distribution does, and nothing is written.
    assert_error(await registry.patch(location, content=b"abc", headers={"Content-Range": "0-0"}),
                 416, "RANGE_INVALID")
    for body in (b"short", b"far too long for ten bytes"):  # chunked bodies, counted as they arrive
        assert_error(await registry.patch(location, content=_streamed(body), headers={"Content-Range": "0-9"}),
                     416, "RANGE_INVALID")
    status = await registry.get(location)
    assert status.status_code == 204 and status.headers["range"] == "0-0"
    data = b"0123456789"
    whole = await registry.patch(location, content=_streamed(data), headers={"Content-Range": "0-9"})
    assert whole.status_code == 202
    # A closing PUT's chunk must continue the upload too: not appended at another offset.
    assert_error(await registry.put(location, params={"digest": digest_of(data + b"!")}, content=b"!",
                                    headers={"Content-Range": "20-20"}), 416, "RANGE_INVALID")
    done = await registry.put(location, params={"digest": digest_of(data + b"!")}, content=b"!",
                              headers={"Content-Range": "10-10"})
    assert done.status_code == 201
    assert (await registry.get(f"/v2/{REPO}/blobs/{digest_of(data + b'!')}")).content == data + b"!"


async def test_base_endpoint(registry: httpx.AsyncClient) -> None:
    response = await registry.get("/v2/")
    assert response.status_code == 200 and response.json() == {}
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_chunked_upload_with_content_range(registry: httpx.AsyncClient, herd: RunningDaemon) -> None:
    data = random_bytes(3 << 20)
    started = await registry.post(f"/v2/{REPO}/blobs/uploads/")
    assert started.status_code == 202 and started.headers["range"] == "0-0"
    location = started.headers["location"]
    assert started.headers["docker-upload-uuid"] in location
    half = len(data) // 2
    first = await registry.patch(location, content=data[:half],
                                 headers={"Content-Range": f"0-{half - 1}", "Content-Type": "application/octet-stream"})
    assert first.status_code == 202 and first.headers["range"] == f"0-{half - 1}"
    out_of_order = await registry.patch(location, content=b"x" * 10,
                                        headers={"Content-Range": f"{half + 5}-{half + 14}"})
    assert_error(out_of_order, 416, "RANGE_INVALID")
    status = await registry.get(location)
    assert status.status_code == 204 and status.headers["range"] == f"0-{half - 1}"
    second = await registry.patch(location, content=data[half:], headers={"Content-Range": f"{half}-{len(data) - 1}"})
    assert second.status_code == 202
    done = await registry.put(location, params={"digest": digest_of(data)})
    assert done.status_code == 201
    assert done.headers["docker-content-digest"] == digest_of(data)
    assert done.headers["location"] == f"/v2/{REPO}/blobs/{digest_of(data)}"
    assert (await registry.get(f"/v2/{REPO}/blobs/{digest_of(data)}")).content == data
    # The blob went to the origin (and its backend), not just to the proxy.
    assert digest_of(data).removeprefix("sha256:") in blob_files(Path(herd.config.data_dir) / "backend")


async def test_streamed_upload_without_content_range(registry: httpx.AsyncClient) -> None:
    data = random_bytes(1 << 20, seed=1)

    async def stream() -> AsyncIterator[bytes]:  # chunked transfer encoding, as docker sends it
        for offset in range(0, len(data), 100_000):
            yield data[offset:offset + 100_000]

    location = (await registry.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
    patched = await registry.patch(location, content=stream())
    assert patched.status_code == 202 and patched.headers["range"] == f"0-{len(data) - 1}"
    assert (await registry.put(location, params={"digest": digest_of(data)})).status_code == 201


async def test_wrong_digest_at_the_end_is_400(registry: httpx.AsyncClient) -> None:
    location = (await registry.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
    await registry.patch(location, content=b"some bytes")
    response = await registry.put(location, params={"digest": digest_of(b"other bytes")})
    assert_error(response, 400, "DIGEST_INVALID")
    assert (await registry.head(f"/v2/{REPO}/blobs/{digest_of(b'other bytes')}")).status_code == 404


async def test_cancelled_upload_is_gone(registry: httpx.AsyncClient) -> None:
    started = await registry.post(f"/v2/{REPO}/blobs/uploads/")
    location = started.headers["location"]
    cancelled = await registry.delete(location)
    assert cancelled.status_code == 204
    # The session it ended, as distribution names it.
    assert cancelled.headers["docker-upload-uuid"] == started.headers["docker-upload-uuid"]
    assert_error(await registry.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_no_content_answers_have_no_content_headers(registry: httpx.AsyncClient) -> None:
    """RFC 9110 8.6: "A server MUST NOT send a Content-Length header field in any response with a
    status code of ... 204 (No Content)"; and no answer without content has a Content-Type."""
    started = await registry.post(f"/v2/{REPO}/blobs/uploads/")
    location = started.headers["location"]
    patched = await registry.patch(location, content=b"abc")
    put = await registry.put(location, params={"digest": digest_of(b"abc")})
    for response in (started, patched, put):
        assert response.status_code in (201, 202) and response.content == b""
        assert "content-type" not in response.headers
    location = (await registry.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
    for response in (await registry.get(location), await registry.delete(location)):
        assert response.status_code == 204
        assert "content-length" not in response.headers and "content-type" not in response.headers
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_blob_reads_ranges_and_delete(registry: httpx.AsyncClient) -> None:
    data = random_bytes(100_000, seed=2)
    digest = await push_blob(registry, REPO, data)
    head = await registry.head(f"/v2/{REPO}/blobs/{digest}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert head.headers["docker-content-digest"] == digest
    ranged = await registry.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=10-99"})
    assert ranged.status_code == 206 and ranged.content == data[10:100]
    assert_error(await registry.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=200000-"}),
                 416, "RANGE_INVALID")
    # Visible only in the repository it was pushed to.
    assert (await registry.head(f"/v2/other/repo/blobs/{digest}")).status_code == 404
    assert (await registry.delete(f"/v2/{REPO}/blobs/{digest}")).status_code == 202
    assert_error(await registry.get(f"/v2/{REPO}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


async def test_cross_repository_mount(registry: httpx.AsyncClient) -> None:
    digest = await push_blob(registry, REPO, b"shared layer")
    mounted = await registry.post("/v2/other/app/blobs/uploads/", params={"mount": digest, "from": REPO})
    assert mounted.status_code == 201 and mounted.headers["location"] == f"/v2/other/app/blobs/{digest}"
    assert (await registry.get(f"/v2/other/app/blobs/{digest}")).content == b"shared layer"
    unknown = await registry.post("/v2/other/app/blobs/uploads/", params={
        "mount": digest_of(b"nowhere"), "from": REPO})
    assert unknown.status_code == 202, "a failed mount falls back to an upload session"


@pytest.mark.parametrize("oci", [False, True])
async def test_manifest_push_and_pull_by_tag_and_digest(registry: httpx.AsyncClient, oci: bool) -> None:
    digest, manifest = await push_image(registry, REPO, "1.0", [random_bytes(5000), random_bytes(7000, seed=3)],
                                        oci=oci)
    assert digest == digest_of(manifest)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    for reference in ("1.0", digest):
        response = await registry.get(f"/v2/{REPO}/manifests/{reference}")
        assert response.status_code == 200 and response.content == manifest  # byte-exact
        assert response.headers["content-type"] == media_type
        assert response.headers["docker-content-digest"] == digest
        head = await registry.head(f"/v2/{REPO}/manifests/{reference}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(manifest))


async def test_manifest_naming_a_missing_blob_is_refused(registry: httpx.AsyncClient) -> None:
    config = await push_blob(registry, REPO, b"{}")
    manifest = image_manifest(b"{}", [b"a layer nobody pushed"])
    response = await registry.put(f"/v2/{REPO}/manifests/broken", content=manifest,
                                  headers={"Content-Type": DOCKER_MANIFEST})
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert config
    assert_error(await registry.get(f"/v2/{REPO}/manifests/broken"), 404, "MANIFEST_UNKNOWN")


def padded_manifest(config: bytes, total: int, pad: str = "x") -> bytes:
    """An OCI image manifest of exactly ``total`` bytes, the padding (``pad``, repeated, as UTF-8)
    in an annotation."""
    def build(count: int) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                           "layers": [], "annotations": {"org.example.padding": pad * count}},
                          ensure_ascii=False).encode()
    free = total - len(build(0))
    body = build(free // len(pad.encode()))
    return body + b" " * (total - len(body))  # (trailing whitespace is valid JSON)


async def test_manifests_of_4_mib_are_accepted(registry: httpx.AsyncClient) -> None:
    """The spec: registries "SHOULD expect to be able to support manifest pushes of at least 4
    megabytes", also when annotations fill it (their record goes to the index) and are not ASCII."""
    config = b'{"architecture": "amd64", "os": "linux"}'
    await push_blob(registry, REPO, config)
    for pad in ("x", "\u00e9"):
        manifest = padded_manifest(config, MAX_MANIFEST_SIZE, pad)
        assert len(manifest) == MAX_MANIFEST_SIZE
        pushed = await registry.put(f"/v2/{REPO}/manifests/big", content=manifest,
                                    headers={"Content-Type": OCI_MANIFEST})
        assert pushed.status_code == 201, pushed.text
        pulled = await registry.get(f"/v2/{REPO}/manifests/big")
        assert pulled.status_code == 200 and pulled.content == manifest


async def test_manifests_over_the_limit_are_413(registry: httpx.AsyncClient) -> None:
    """The spec: a manifest over the registry's limit SHOULD get 413 (with MANIFEST_INVALID, the
    spec's code for it), and is not stored."""
    config = b'{"architecture": "amd64", "os": "linux"}'
    await push_blob(registry, REPO, config)
    manifest = padded_manifest(config, MAX_MANIFEST_SIZE + 1024)
    response = await registry.put(f"/v2/{REPO}/manifests/too-big", content=manifest,
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(response, 413, "MANIFEST_INVALID")
    assert response.json()["errors"][0]["detail"]["limit"] == MAX_MANIFEST_SIZE
    assert_error(await registry.get(f"/v2/{REPO}/manifests/too-big"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry.get(f"/v2/{REPO}/manifests/{digest_of(manifest)}"), 404, "MANIFEST_UNKNOWN")


async def test_a_smaller_configured_manifest_limit_is_413_too(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``proxy.max_manifest_size`` below 4 MiB: a manifest over it is 413, not a JSON error about
    the part that was read."""
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", "proxy.max_manifest_size=1000"),
                              ["origin", "index", "proxy"])
    async with httpx.AsyncClient(base_url=herd.url("proxy")) as client:
        config = b'{"architecture": "amd64", "os": "linux"}'
        await push_blob(client, REPO, config)
        response = await client.put(f"/v2/{REPO}/manifests/t", content=padded_manifest(config, 2000),
                                    headers={"Content-Type": OCI_MANIFEST})
        assert_error(response, 413, "MANIFEST_INVALID")
        assert response.json()["errors"][0]["detail"]["limit"] == 1000
        small = await client.put(f"/v2/{REPO}/manifests/t", content=padded_manifest(config, 1000),
                                 headers={"Content-Type": OCI_MANIFEST})
        assert small.status_code == 201, small.text
    await herd.stop()


async def test_an_index_may_name_children_not_pushed_yet(registry: httpx.AsyncClient) -> None:
    child = image_manifest(b"{}", [b"layer"], oci=True)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(OCI_MANIFEST, child, platform={"architecture": "amd64", "os": "linux"})]}).encode()
    response = await registry.put(f"/v2/{REPO}/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
    assert response.status_code == 201, response.text
    assert (await registry.get(f"/v2/{REPO}/manifests/multi")).headers["content-type"] == OCI_INDEX


async def test_referrers(registry: httpx.AsyncClient) -> None:
    subject_digest, _ = await push_image(registry, REPO, "signed", [b"payload"], oci=True)
    await push_blob(registry, REPO, b"{}")
    signature = image_manifest(b"{}", [], oci=True, artifactType="application/vnd.example.signature",
                               subject={"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": 1})
    pushed = await registry.put(f"/v2/{REPO}/manifests/{digest_of(signature)}", content=signature,
                                headers={"Content-Type": OCI_MANIFEST})
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["oci-subject"] == subject_digest
    listing = await registry.get(f"/v2/{REPO}/referrers/{subject_digest}")
    assert listing.status_code == 200 and listing.headers["content-type"] == OCI_INDEX
    [entry] = listing.json()["manifests"]
    assert entry["digest"] == digest_of(signature)
    assert entry["artifactType"] == "application/vnd.example.signature"
    filtered = await registry.get(f"/v2/{REPO}/referrers/{subject_digest}",
                                  params={"artifactType": "application/vnd.example.sbom"})
    assert filtered.json()["manifests"] == [] and filtered.headers["oci-filters-applied"] == "artifactType"


async def test_tags_list_pagination_and_catalog(registry: httpx.AsyncClient) -> None:
    for tag in ["b", "a", "c", "d"]:
        await push_image(registry, REPO, tag, [b"same layer"])
    listing = await registry.get(f"/v2/{REPO}/tags/list")
    assert listing.json() == {"name": REPO, "tags": ["a", "b", "c", "d"]}
    page = await registry.get(f"/v2/{REPO}/tags/list", params={"n": 2})
    assert page.json()["tags"] == ["a", "b"]
    assert page.headers["link"] == f'</v2/{REPO}/tags/list?last=b&n=2>; rel="next"'
    rest = await registry.get(f"/v2/{REPO}/tags/list", params={"n": 2, "last": "b"})
    assert rest.json()["tags"] == ["c", "d"]
    assert_error(await registry.get("/v2/nobody/here/tags/list"), 404, "NAME_UNKNOWN")
    assert REPO in (await registry.get("/v2/_catalog")).json()["repositories"]


async def test_deleting_manifests_and_tags(registry: httpx.AsyncClient) -> None:
    digest, _ = await push_image(registry, REPO, "keep", [b"layer one"])
    await push_image(registry, REPO, "alias", [b"layer one"])
    assert (await registry.delete(f"/v2/{REPO}/manifests/alias")).status_code == 202
    assert (await registry.get(f"/v2/{REPO}/manifests/keep")).status_code == 200
    assert (await registry.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
    assert_error(await registry.get(f"/v2/{REPO}/manifests/keep"), 404, "MANIFEST_UNKNOWN")


async def test_bad_names_and_references(registry: httpx.AsyncClient) -> None:
    assert_error(await registry.get("/v2/UPPER/case/tags/list"), 400, "NAME_INVALID")
    assert_error(await registry.get(f"/v2/{REPO}/manifests/bad!tag"), 400, "TAG_INVALID")
    assert_error(await registry.get(f"/v2/{REPO}/blobs/sha256:nope"), 400, "DIGEST_INVALID")


async def test_basic_auth(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = make_config(tmp_path / "herd", f"proxy.users.alice={json.dumps(hash_password('s3cret'))}")
    herd = await start_daemon(nursery, config, ["origin", "index", "proxy"])
    async with httpx.AsyncClient(base_url=herd.url("proxy")) as client:
        refused = await client.get("/v2/")
        assert_error(refused, 401, "UNAUTHORIZED")
        assert refused.headers["www-authenticate"] == 'Basic realm="swarmreg"'
        assert_error(await client.get("/v2/", auth=("alice", "wrong")), 401, "UNAUTHORIZED")
        assert (await client.get("/v2/", auth=("alice", "s3cret"))).status_code == 200
    async with httpx.AsyncClient(base_url=herd.url("proxy"), auth=("alice", "s3cret")) as client:
        await push_image(client, REPO, "t", [b"x"])
    await herd.stop()
