"""A full disk fails the writes that need space, with a clear 5xx, and nothing else.

Real tmpfs mounts of a few MiB (the tests run as root; they skip, saying why, where mounting
is not allowed): uploads through the real HTTP API until the disk is full, a metainfo cache
with no room left, and a push through the proxy into a full origin.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.digest import Digest
from swarmreg.errors import STORAGE_FULL, SwarmregError
from swarmreg.store.blobstore import BlobStore
from swarmreg.store.files import ByteRange
from swarmreg.store.uploads import UploadManager
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import blob_path, commit, digest_of, fill, patch, tmpfs, upload_blob

NS = "library/full"
MiB = 1 << 20


@asynccontextmanager
async def running_origin(data_dir: Path, *roles: str, overrides: Sequence[str] = ()) -> AsyncIterator[RunningDaemon]:
    """A real daemon (the origin role, and ``roles``) on ``data_dir``, stopped at the end."""
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, make_config(data_dir, *overrides), ["origin", *roles])
        try:
            yield daemon
        finally:
            await daemon.stop()


def assert_storage_full(response: httpx.Response, data_dir: Path) -> None:
    """A 507 in the JSON envelope, naming neither a path of the node nor a traceback."""
    assert response.status_code == 507, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["code"] == "STORAGE_FULL" and error["message"]
    assert str(data_dir) not in response.text and "Traceback" not in response.text
    assert "/" not in error["message"], error["message"]


def assert_blobs_match_their_digests(data_dir: Path) -> int:
    """Every file under blobs/ holds the content its name says; returns how many there are."""
    files = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
    return len(files)


def assert_sessions_hold_only_what_they_recorded(data_dir: Path) -> None:
    """A chunk that failed for want of space gave its bytes back: each session's file ends where
    its recorded ranges do."""
    for meta in (data_dir / "uploads").glob("*/meta.json"):
        ranges = json.loads(meta.read_text())["ranges"]
        assert (meta.parent / "data").stat().st_size == (ranges[-1][1] if ranges else 0)


async def test_a_chunk_that_meets_a_full_disk_is_not_recorded_and_may_be_sent_again(tmp_path: Path) -> None:
    """The store's view: STORAGE_FULL, the session unchanged on disk and in memory, then a retry."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        store = BlobStore(disk / "data")
        store.prepare()
        manager = UploadManager(disk / "data" / "uploads", store, ttl=3600, max_size=1 << 30)
        manager.load()
        data = random_bytes(MiB, seed=3)
        upload = await manager.create(NS, Digest.parse(digest_of(data)))
        await manager.write(upload, ByteRange(0, 256 << 10), _once(data[:256 << 10]))
        before = upload.meta
        filler = fill(disk)
        with pytest.raises(SwarmregError) as failed:
            await manager.write(upload, ByteRange(256 << 10, len(data)), _once(data[256 << 10:]))
        assert failed.value.code is STORAGE_FULL and "/" not in failed.value.message
        assert upload.meta == before and upload.in_flight == []
        assert_sessions_hold_only_what_they_recorded(disk / "data")
        filler.unlink()
        await manager.write(upload, ByteRange(256 << 10, len(data)), _once(data[256 << 10:]))
        assert await manager.commit(upload, Digest.parse(digest_of(data))) == len(data)
        assert assert_blobs_match_their_digests(disk / "data") == 1


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_uploads_until_the_disk_is_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        data_dir = disk / "data"
        spare = disk / "spare"  # room given back at the end
        spare.write_bytes(b"\0" * (2 * MiB))
        async with running_origin(data_dir) as origin, \
                httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
            stored: dict[str, bytes] = {}
            full = None
            for seed in range(20):
                data = random_bytes(MiB, seed=seed)
                digest = digest_of(data)
                opened = await client.post(f"{blob_path(NS, digest)}/uploads")
                if opened.status_code != 200:  # no room left even for a new session
                    full = opened
                    break
                uid = opened.headers["Location"]
                failed = None
                for start in range(0, len(data), 256 << 10):
                    response = await patch(client, NS, digest, uid, data[start:start + (256 << 10)], start)
                    if response.status_code != 200:
                        failed = response
                        break
                if failed is None:
                    response = await commit(client, NS, digest, uid)
                    if response.status_code == 200:
                        stored[digest] = data
                        continue
                    failed = response
                full = failed
                break
            assert full is not None, "8 MiB held 20 MiB of blobs?"
            assert_storage_full(full, data_dir)
            assert len(stored) >= 3
            # The daemon serves on: health, and every blob it stored, whole.
            assert (await client.get("/health")).status_code == 200
            for digest, data in stored.items():
                response = await client.get(blob_path(NS, digest))
                assert response.status_code == 200 and response.content == data
            # Opening another session on the full disk is the same clear answer, or it opens.
            again = await client.post(f"{blob_path(NS, digest_of(b'more'))}/uploads")
            assert again.status_code in (200, 507), again.text
            if again.status_code == 507:
                assert_storage_full(again, data_dir)
            assert assert_blobs_match_their_digests(data_dir) == len(stored)
            assert_sessions_hold_only_what_they_recorded(data_dir)
            # Room again: the next upload goes through.
            spare.unlink()
            data = random_bytes(MiB, seed=99)
            digest = await upload_blob(client, NS, data, chunk=256 << 10)
            assert (await client.get(blob_path(NS, digest))).content == data
            assert assert_blobs_match_their_digests(data_dir) == len(stored) + 1


async def test_a_metainfo_cache_without_room_does_not_stop_the_origin(tmp_path: Path) -> None:
    """The commit succeeds; writing its metainfo (in the background) fails; the origin serves on."""
    data_dir = tmp_path / "origin"
    with tmpfs(data_dir / "metainfo", "256k") as metainfo:
        filler = fill(metainfo)
        async with running_origin(data_dir) as origin, \
                httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
            data = random_bytes(2 * MiB, seed=5)
            digest = await upload_blob(client, NS, data)
            # The torrent is hashed (and its metainfo written) after the commit, off the request.
            await trio.sleep(1.0)
            assert (await client.get("/health")).status_code == 200
            assert (await client.get(blob_path(NS, digest))).content == data
            # Asked for, the metainfo is served all the same (built again, as it is not cached).
            response = await client.get(f"{blob_path(NS, digest)}/metainfo")
            assert response.status_code == 200, response.text
            assert not origin.daemon.stopped.is_set()
            assert [p.name for p in metainfo.iterdir()] == [filler.name]  # no half-written file
            another = await upload_blob(client, NS, random_bytes(MiB, seed=6))
            assert (await client.get(blob_path(NS, another))).status_code == 200


async def test_a_push_through_the_proxy_into_a_full_origin_is_507(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        data_dir = disk / "data"
        async with running_origin(data_dir, "index", "proxy") as herd, \
                httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as registry:
            fill(disk)
            data = random_bytes(MiB, seed=7)
            digest = digest_of(data)
            response = await registry.post(f"/v2/{NS}/blobs/uploads/", params={"digest": digest}, content=data)
            assert_storage_full(response, data_dir)
            assert (await registry.get("/v2/")).status_code == 200
            assert (await registry.head(f"/v2/{NS}/blobs/{digest}")).status_code == 404
            assert assert_blobs_match_their_digests(data_dir) == 0
            # A chunked push meets the same answer at its first chunk.
            started = await registry.post(f"/v2/{NS}/blobs/uploads/")
            if started.status_code == 202:
                chunk = await registry.patch(started.headers["Location"], content=data,
                                             headers={"Content-Type": "application/octet-stream"})
                assert_storage_full(chunk, data_dir)
            else:
                assert_storage_full(started, data_dir)
            assert json.loads((await registry.get("/v2/")).text) is not None


async def test_a_background_failure_after_a_commit_does_not_stop_the_origin(tmp_path: Path) -> None:
    """An OSError the metainfo step does not expect (its cache entry is a directory) is logged;
    the origin serves on, the upload's answer included."""
    data_dir = tmp_path / "origin"
    data = random_bytes(MiB, seed=8)
    digest = digest_of(data)
    async with running_origin(data_dir) as origin, \
            httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        (data_dir / "metainfo" / f"{digest.removeprefix('sha256:')}.torrent").mkdir()
        await upload_blob(client, NS, data)
        await trio.sleep(0.5)  # the metainfo is built after the commit, off the request
        assert (await client.get("/health")).status_code == 200
        assert (await client.get(blob_path(NS, digest))).content == data
        response = await client.get(f"{blob_path(NS, digest)}/metainfo")
        assert response.status_code == 500 and str(data_dir) not in response.text
        assert response.json()["errors"][0]["code"] == "INTERNAL"
        assert not origin.daemon.stopped.is_set()


async def test_a_manifest_push_onto_a_full_index_is_507_and_the_index_recovers(tmp_path: Path) -> None:
    """SQLite's 'database or disk is full' is STORAGE_FULL too, and leaves no transaction open."""
    from tests.proxy.helpers import DOCKER_MANIFEST, image_manifest, push_blob

    data_dir = tmp_path / "data"
    with tmpfs(data_dir / "indexdb", "1m") as index_disk:
        async with running_origin(data_dir, "index", "proxy", overrides=["index.database=indexdb/index.db"]) as herd, \
                httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as registry:
            config, layer = b'{"architecture": "amd64", "os": "linux"}', random_bytes(64 << 10, seed=9)
            for blob in (config, layer):
                await push_blob(registry, NS, blob)
            filler = fill(index_disk)
            manifests = [image_manifest(config, [layer], annotations={"n": "x" * 2000 + str(n)}) for n in range(200)]
            answers = []
            for n, manifest in enumerate(manifests):  # until the WAL needs a page it cannot get
                response = await registry.put(f"/v2/{NS}/manifests/t{n}", content=manifest,
                                              headers={"Content-Type": DOCKER_MANIFEST})
                answers.append(response)
                if response.status_code != 201:
                    break
            assert_storage_full(answers[-1], data_dir)
            assert "index" in answers[-1].json()["errors"][0]["message"]
            assert (await registry.get("/v2/")).status_code == 200
            filler.unlink()
            response = await registry.put(f"/v2/{NS}/manifests/after", content=manifests[0],
                                          headers={"Content-Type": DOCKER_MANIFEST})
            assert response.status_code == 201, response.text
            assert (await registry.get(f"/v2/{NS}/manifests/after",
                                       headers={"Accept": DOCKER_MANIFEST})).content == manifests[0]
