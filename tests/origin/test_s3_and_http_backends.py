"""Daemons on the S3 and HTTP backends (real daemons in this process, moto's server, a real web
server): an image pushed through the proxy lands in the bucket and agents pull it, from the
bucket once the origin lost its copy; with S3 down the origin answers clear errors and keeps
serving what it holds, and catches up once S3 is back; an HTTP backend's blobs are fetched,
checked, and never written."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from swarmreg.digest import Digest
from tests.conftest import RunningDaemon, blob_files, free_port, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error, blob_path, commit, patch, start_upload, upload_blob
from tests.proxy.helpers import digest_of, push_image
from tests.servers.http_files import file_server
from tests.servers.s3 import ADMIN_KEYS, MotoServer

REPO = "team/app"
HERD = ["origin", "tracker", "index", "proxy"]


def s3_backend(server: MotoServer, bucket: str, **options: Any) -> str:
    """The ``backends=[...]`` override of one S3 backend for every namespace."""
    settings = {"bucket": bucket, "endpoint_url": server.endpoint_url, "region": "us-east-1", "part_size": "5MiB",
                "access_key_id": ADMIN_KEYS["aws_access_key_id"],
                "secret_access_key": ADMIN_KEYS["aws_secret_access_key"], **options}
    table = ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items())
    return f'backends=[{{type="s3", options={{{table}}}}}]'


def key(digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"blobs/sha256/{hex_[:2]}/{hex_}"


def evict(origin: RunningDaemon, digest: str) -> None:
    """Remove the origin's own copy, as a lost disk would."""
    hex_ = digest.removeprefix("sha256:")
    (Path(origin.config.data_dir) / "blobs/sha256" / hex_[:2] / hex_).unlink()


async def test_a_push_lands_in_the_bucket_and_an_agent_pulls_it_back_from_there(
        nursery: trio.Nursery, tmp_path: Path, moto_server: MotoServer, s3_bucket: str,
        caplog: pytest.LogCaptureFixture) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", s3_backend(moto_server, s3_bucket)), HERD)
    roles = herd.ready["roles"]
    layers = [random_bytes(11 << 20, seed=1), random_bytes(200_000, seed=2)]  # the first in three parts
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest, manifest = await push_image(proxy, REPO, "v1", layers)
    config = json.loads(manifest)["config"]
    pushed = {key(digest_of(layer)): len(layer) for layer in layers}
    assert moto_server.keys(s3_bucket) == {**pushed, key(digest): len(manifest), key(config["digest"]): config["size"]}
    client = moto_server.client()
    assert client.head_object(Bucket=s3_bucket, Key=key(digest_of(layers[0])))["ETag"].endswith('-3"')
    # Hostile digests are refused at the door: S3 never hears of them.
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        for hostile in ("sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:%2e%2e%2f"):
            answer = await proxy.get(f"/v2/{REPO}/blobs/{hostile}")
            assert answer.status_code in (400, 404), (hostile, answer.status_code)
            assert answer.json()["errors"][0]["code"] in ("DIGEST_INVALID", "NAME_INVALID", "NOT_FOUND")
    await trio.sleep(0.2)  # moto's access log is read as it comes
    # Only this test's bucket: the session's server also logs other tests' keys (some with "md5").
    ours = [r for r in moto_server.requests if r.path.startswith(f"/{s3_bucket}/")]
    assert ours, "moto's access log shows none of this test's requests"
    assert not [r for r in ours if any(word in r.path for word in ("etc", "AAAA", "md5", "%2e"))]

    for layer in layers:
        evict(herd, digest_of(layer))
    caplog.set_level(logging.INFO, logger="swarmreg.origin")
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}"),
        ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        assert (await registry.get(f"/v2/{REPO}/manifests/v1")).content == manifest
        for layer in layers:
            assert (await registry.get(f"/v2/{REPO}/blobs/{digest_of(layer)}")).content == layer
    fetched = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetched ")]
    assert sorted(fetched) == sorted(f"fetched {digest_of(layer)} ({len(layer)} bytes) from S3 bucket {s3_bucket}"
                                     for layer in layers)


async def test_with_s3_down_the_origin_answers_clearly_serves_what_it_holds_and_catches_up(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    server = MotoServer()
    server.start()
    try:
        bucket = server.create_bucket()
        origin = await start_daemon(nursery, make_config(tmp_path / "origin", s3_backend(server, bucket, attempts=1)),
                                    ["origin"])
        async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
            held = random_bytes(300_000, seed=3)
            held_digest = await upload_blob(client, REPO, held, through=True)
            server.stop()

            absent = blob_path(REPO, digest_of(b"only in S3, which is down"))
            for response in (await client.get(absent), await client.head(absent)):
                assert response.status_code == 503
                if response.request.method == "GET":
                    assert_error(response, 503, "BACKEND_UNAVAILABLE")
                    message = response.json()["errors"][0]["message"]
                    assert f"S3 bucket {bucket}: cannot connect to the endpoint" in message
                    for leak in ("Traceback", "blobs/sha256", str(server.port), ADMIN_KEYS["aws_secret_access_key"]):
                        assert leak not in response.text
            assert (await client.get(blob_path(REPO, held_digest))).content == held
            assert (await client.get("/health")).status_code == 200

            # A push while S3 is down: committed here, its write-through refused clearly.
            late = random_bytes(200_000, seed=4)
            late_digest = digest_of(late)
            uid = await start_upload(client, REPO, late_digest)
            await patch(client, REPO, late_digest, uid, late, 0)
            assert_error(await commit(client, REPO, late_digest, uid, through=True), 503, "BACKEND_UNAVAILABLE")
            assert (await client.get(blob_path(REPO, late_digest))).content == late

            server.start()  # back, empty (moto keeps its buckets in memory): the bucket is made again
            server.client().create_bucket(Bucket=bucket)
            # Opening the upload again writes the held blob to the backend before its 409.
            assert (await client.post(f"{blob_path(REPO, late_digest)}/uploads")).status_code == 409
            assert server.keys(bucket) == {key(late_digest): len(late)}
        await origin.stop()
    finally:
        server.stop()


async def test_an_http_backend_is_read_through_checked_and_never_written(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    web = tmp_path / "web"
    (web / "blobs").mkdir(parents=True)
    good, bad = random_bytes(2 << 20, seed=5), random_bytes(100_000, seed=6)
    (web / "blobs" / digest_of(good)).write_bytes(good)
    (web / "blobs" / digest_of(bad)).write_bytes(bad[:-1] + b"!")  # not the bytes of its name
    with file_server(web) as (port, _log):
        backends = (f'backends=[{{namespace="web/.*", type="http", options={{base="http://127.0.0.1:{port}/blobs"}}}},'
                    '{namespace=".*"}]')
        origin = await start_daemon(nursery, make_config(tmp_path / "origin", backends), ["origin"])
        data_dir = Path(origin.config.data_dir)
        async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
            assert (await client.get(blob_path("web/app", digest_of(good)))).content == good
            response = await client.get(blob_path("web/app", digest_of(bad)))
            assert_error(response, 502, "BACKEND_ERROR")
            assert "does not match" in response.json()["errors"][0]["message"]
            assert set(blob_files(data_dir)) == {Digest.parse(digest_of(good)).hex}, "the bad one is not kept"
            assert list((data_dir / "tmp").iterdir()) == []
            # Written through to a read-only backend: refused before the commit changes anything.
            data = b"for the web"
            uid = await start_upload(client, "web/app", digest_of(data))
            await patch(client, "web/app", digest_of(data), uid, data, 0)
            assert_error(await commit(client, "web/app", digest_of(data), uid, through=True), 405, "UNSUPPORTED")
            assert not (web / "blobs" / digest_of(data)).exists()
        await origin.stop()


async def test_an_origin_starts_and_serves_with_s3_unreachable(nursery: trio.Nursery, tmp_path: Path) -> None:
    unreachable = MotoServer()
    unreachable.port = free_port()  # nothing listens there
    origin = await start_daemon(nursery, make_config(
        tmp_path / "origin", s3_backend(unreachable, "never-reached", attempts=1)), ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        assert (await client.get("/health")).status_code == 200
        data = b"kept here"
        assert (await client.get(blob_path(REPO, await upload_blob(client, REPO, data)))).content == data
        assert_error(await client.get(blob_path(REPO, digest_of(b"elsewhere"))), 503, "BACKEND_UNAVAILABLE")
    await origin.stop()
