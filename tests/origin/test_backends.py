"""Write-through to the storage backend on commit, and lazy fetches from it on a local miss."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import PORT_ZERO, RunningDaemon, blob_files, random_bytes, start_daemon
from tests.origin.helpers import (
    assert_error,
    blob_path,
    commit,
    digest_of,
    patch,
    start_upload,
    upload_blob,
)

NS = "library/app"


def backend_blobs(origin: RunningDaemon) -> dict[str, int]:
    return blob_files(Path(origin.config.data_dir) / "backend")


async def test_through_true_writes_the_blob_to_the_backend(origin_client: httpx.AsyncClient,
                                                          origin: RunningDaemon) -> None:
    data = random_bytes(3 << 20)
    digest = await upload_blob(origin_client, NS, data, through=True)
    hex_ = digest.removeprefix("sha256:")
    assert backend_blobs(origin) == {hex_: len(data)}
    assert (Path(origin.config.data_dir) / "backend/blobs/sha256" / hex_[:2] / hex_).read_bytes() == data


async def test_through_false_keeps_the_blob_local(origin_client: httpx.AsyncClient, origin: RunningDaemon) -> None:
    await upload_blob(origin_client, NS, random_bytes(1000), through=False)
    assert backend_blobs(origin) == {}
    assert len(blob_files(Path(origin.config.data_dir))) == 1


async def test_local_miss_is_fetched_from_the_backend(origin_client: httpx.AsyncClient, origin: RunningDaemon,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    data = random_bytes(6 << 20, seed=1)
    digest = await upload_blob(origin_client, NS, data, through=True)
    hex_ = digest.removeprefix("sha256:")
    (Path(origin.config.data_dir) / "blobs/sha256" / hex_[:2] / hex_).unlink()  # as if evicted
    path = blob_path(NS, digest)

    assert (await origin_client.head(path, params={"local": "true"})).status_code == 404
    head = await origin_client.head(path)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))

    caplog.set_level(logging.INFO, logger="swarmreg.origin")
    bodies: list[bytes] = []

    async def get() -> None:
        bodies.append((await origin_client.get(path)).content)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert bodies == [data] * 5
    fetches = [r for r in caplog.records if r.getMessage().startswith("fetched ")]
    assert len(fetches) == 1, "concurrent requests share one fetch"
    assert blob_files(Path(origin.config.data_dir)) == {hex_: len(data)}


async def test_a_blob_nobody_has_is_404_after_asking_the_backend(origin_client: httpx.AsyncClient) -> None:
    assert_error(await origin_client.get(blob_path(NS, digest_of(b"nowhere"))), 404, "BLOB_UNKNOWN")


async def test_corrupt_backend_content_is_502_and_never_stored(origin_client: httpx.AsyncClient,
                                                               origin: RunningDaemon) -> None:
    data = random_bytes(100_000, seed=2)
    digest = await upload_blob(origin_client, NS, data, through=True)
    hex_ = digest.removeprefix("sha256:")
    data_dir = Path(origin.config.data_dir)
    (data_dir / "blobs/sha256" / hex_[:2] / hex_).unlink()
    (data_dir / "backend/blobs/sha256" / hex_[:2] / hex_).write_bytes(b"rotten" + data[6:])

    response = await origin_client.get(blob_path(NS, digest))
    assert_error(response, 502, "BACKEND_ERROR")
    assert blob_files(data_dir) == {}
    assert list((data_dir / "tmp").iterdir()) == []


async def test_backend_write_failure_is_502_with_the_reason(origin_client: httpx.AsyncClient,
                                                            origin: RunningDaemon) -> None:
    data = random_bytes(5000, seed=3)
    digest = digest_of(data)
    hex_ = digest.removeprefix("sha256:")
    # A file where the backend needs a directory makes its write fail for real.
    shard = Path(origin.config.data_dir) / "backend/blobs/sha256" / hex_[:2]
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_bytes(b"in the way")
    uid = await start_upload(origin_client, NS, digest)
    await patch(origin_client, NS, digest, uid, data, 0)
    response = await commit(origin_client, NS, digest, uid, through=True)
    assert_error(response, 502, "BACKEND_ERROR")
    assert "backend" in response.json()["errors"][0]["message"]
    # The blob itself was committed locally and serves; the origin keeps serving.
    assert (await origin_client.get(blob_path(NS, digest))).content == data
    assert (await origin_client.get("/health")).status_code == 200


async def test_namespaces_route_to_their_backends(nursery: trio.Nursery, tmp_path: Path) -> None:
    config_file = tmp_path / "origin.toml"
    config_file.write_text('''
[[backends]]
namespace = "team-a/.*"
type = "filesystem"
options = { root = "backend-a" }

[[backends]]
namespace = "team-b/.*"
type = "filesystem"
options = { root = "backend-b" }
''')
    from swarmreg.config import load_config

    config = load_config(config_file, [*PORT_ZERO], data_dir=str(tmp_path / "data"))
    origin = await start_daemon(nursery, config, ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        a = await upload_blob(client, "team-a/app", b"for team a", through=True)
        b = await upload_blob(client, "team-b/app", b"for team b", through=True)
        # No backend matches: through=true is refused before anything changes.
        data = b"for nobody"
        digest = digest_of(data)
        uid = await start_upload(client, "team-c/app", digest)
        await patch(client, "team-c/app", digest, uid, data, 0)
        assert_error(await commit(client, "team-c/app", digest, uid, through=True), 400, "NAME_INVALID")
        assert (await client.get(blob_path("team-c/app", digest))).status_code == 404
        assert (await commit(client, "team-c/app", digest, uid, through=False)).status_code == 200
    assert set(blob_files(tmp_path / "data/backend-a")) == {a.removeprefix("sha256:")}
    assert set(blob_files(tmp_path / "data/backend-b")) == {b.removeprefix("sha256:")}
    await origin.stop()
