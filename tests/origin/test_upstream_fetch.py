"""The origin fetching blobs of upstream namespaces (``<host:port>/<repo>``) from the upstream:
from a real docker-registry once however many ask, seeded as soon as verified; and from upstreams
that lie (a wrong digest, a body cut short, a wrong size) or hang, whose bytes are never stored."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import load_config
from swarmreg.digest import Digest
from swarmreg.origin.wire import blob_path
from swarmreg.swarm.metainfo import build_metainfo
from tests.conftest import PORT_ZERO, RunningDaemon, blob_files, random_bytes, start_daemon
from tests.origin.helpers import assert_error, commit, patch, start_upload
from tests.upstream.lying import LyingUpstream
from tests.upstream.registries import blob_requests, docker_registry, push_blob

MiB = 1 << 20
READ_TIMEOUT = 1.0


@asynccontextmanager
async def origin_for(nursery: trio.Nursery, tmp_path: Path, upstream: str,
                     *extra: str) -> AsyncIterator[tuple[RunningDaemon, httpx.AsyncClient]]:
    """An origin daemon whose [[registries]] reach ``upstream`` over plain HTTP, short timeouts."""
    config_file = tmp_path / "origin.toml"
    config_file.write_text(f'''
[[registries]]
name = "{upstream}"
scheme = "http"
connect_timeout = {READ_TIMEOUT}
read_timeout = {READ_TIMEOUT}
''')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5", *extra], data_dir=str(tmp_path / "origin"))
    origin = await start_daemon(nursery, config, ["origin"])
    try:
        async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=30) as client:
            yield origin, client
    finally:
        await origin.stop()


def nothing_kept(origin: RunningDaemon, digest: Digest) -> None:
    """The store holds no blob, no torrent of ``digest``, and no temp file is left."""
    data_dir = Path(origin.config.data_dir)
    assert digest.hex not in blob_files(data_dir)
    assert list((data_dir / "tmp").iterdir()) == []
    assert not list(data_dir.glob(f"**/{digest.hex}.torrent"))


async def test_concurrent_misses_share_one_upstream_get_and_the_blob_is_seeded(nursery: trio.Nursery,
                                                                              tmp_path: Path) -> None:
    data = random_bytes(6 * MiB + 4321, seed=12)
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        digest = Digest.parse(await push_blob(f"http://{upstream}", "team/app", data))
        expected = build_metainfo(_write(tmp_path / digest.hex, data), digest)
        namespace = f"{upstream}/team/app"
        async with origin_for(nursery, tmp_path, upstream) as (origin, client):
            answers: dict[str, list[bytes]] = {"metainfo": [], "blob": []}

            async def ask(what: str) -> None:
                suffix = "/metainfo" if what == "metainfo" else ""
                response = await client.get(blob_path(namespace, digest, suffix))
                assert response.status_code == 200, response.text
                answers[what].append(response.content)

            async with trio.open_nursery() as asking:
                for i in range(8):
                    asking.start_soon(ask, "metainfo" if i % 2 else "blob")
            assert answers == {"metainfo": [expected.raw] * 4, "blob": [data] * 4}
            log = tmp_path / "docker-registry.log"
            assert blob_requests(log, "GET", str(digest)) == 1, "one upstream GET for every concurrent miss"
            # Seeded, from the metainfo made while the bytes arrived (cached under the digest).
            stats = (await client.get("/stats")).json()
            assert [(t["digest"], t["complete"]) for t in stats["torrents"]] == [(str(digest), True)]
            assert Path(origin.config.data_dir, "metainfo", f"{digest.hex}.torrent").read_bytes() == expected.raw
            assert blob_files(Path(origin.config.data_dir)) == {digest.hex: len(data)}
            # Held now: more asks go nowhere near the upstream.
            assert (await client.get(blob_path(namespace, digest))).content == data
            assert blob_requests(log, "GET", str(digest)) == 1


async def test_a_blob_get_seeds_the_blob_from_the_same_pass(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Fetched for a plain GET, the blob's torrent was hashed as it arrived: it is seeded and
    its metainfo cached the moment the blob is held, with nothing read back from the file."""
    data = random_bytes(5 * MiB + 3, seed=15)
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        digest = Digest.parse(await push_blob(f"http://{upstream}", "team/app", data))
        async with origin_for(nursery, tmp_path, upstream) as (origin, client):
            assert (await client.get(blob_path(f"{upstream}/team/app", digest))).content == data
            stats = (await client.get("/stats")).json()
            assert [(t["digest"], t["complete"]) for t in stats["torrents"]] == [(str(digest), True)]
            cached = Path(origin.config.data_dir, "metainfo", f"{digest.hex}.torrent").read_bytes()
            assert cached == build_metainfo(_write(tmp_path / digest.hex, data), digest).raw
            assert (await client.get(blob_path(f"{upstream}/team/app", digest, "/metainfo"))).content == cached


async def test_a_blob_the_upstream_lacks_is_404_and_the_empty_blob_is_held(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        digest = Digest.of(b"not pushed")
        empty = Digest.parse(await push_blob(f"http://{upstream}", "team/app", b""))
        async with origin_for(nursery, tmp_path, upstream) as (origin, client):
            for suffix in ("", "/metainfo"):
                assert_error(await client.get(blob_path(f"{upstream}/team/app", digest, suffix)), 404, "BLOB_UNKNOWN")
            nothing_kept(origin, digest)
            # The empty blob is fetched and held; it has no torrent.
            assert (await client.get(blob_path(f"{upstream}/team/app", empty))).content == b""
            assert_error(await client.get(blob_path(f"{upstream}/team/app", empty, "/metainfo")), 400, "BAD_REQUEST")
            assert blob_files(Path(origin.config.data_dir)) == {empty.hex: 0}


async def test_an_air_gapped_origin_never_asks_the_upstream(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = random_bytes(100_000, seed=13)
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        digest = Digest.parse(await push_blob(f"http://{upstream}", "team/app", data))
        async with origin_for(nursery, tmp_path, upstream, "air_gapped=true") as (origin, client):
            assert_error(await client.get(blob_path(f"{upstream}/team/app", digest)), 404, "BLOB_UNKNOWN")
            nothing_kept(origin, digest)
        log = (tmp_path / "docker-registry.log").read_text()
        assert f"/blobs/{digest}" not in log


# -- upstreams that lie or hang ---------------------------------------------------------------------------

LIES = {
    "wrong": (502, "BACKEND_ERROR", "does not match the digest"),
    "short": (503, "UPSTREAM_UNAVAILABLE", "broke off its answer"),
    "sized": (502, "BACKEND_ERROR", "of the"),
    "stall": (503, "UPSTREAM_UNAVAILABLE", "read_timeout"),
    "hang": (503, "UPSTREAM_UNAVAILABLE", "read_timeout"),
}


@pytest.mark.parametrize("mode", LIES)
async def test_a_lying_or_hanging_upstream_is_never_stored(nursery: trio.Nursery, tmp_path: Path, mode: str) -> None:
    data = random_bytes(3 * MiB + 5, seed=14)
    lying = LyingUpstream(data, mode)
    await nursery.start(lying.serve)
    upstream = f"127.0.0.1:{lying.port}"
    namespace = f"{upstream}/x/y"
    status, code, words = LIES[mode]
    async with origin_for(nursery, tmp_path, upstream) as (origin, client):
        for suffix in ("/metainfo", "", "/metainfo"):  # asked again: nothing half-done was kept
            started = time.monotonic()
            if suffix == "":
                # The blob streams while it arrives, so its GET is a 200 once bytes came in:
                # then its body is cut, never whole (the last byte waits for the digest's check).
                outcome = await get_or_cut(client, blob_path(namespace, lying.digest))
                if isinstance(outcome, int):
                    assert outcome < len(data), outcome
                    nothing_kept(origin, lying.digest)
                    continue
                response = outcome
            else:
                response = await client.get(blob_path(namespace, lying.digest, suffix))
            elapsed = time.monotonic() - started
            assert_error(response, status, code)
            message = response.json()["errors"][0]["message"]
            assert words in message and upstream in message, message
            assert "Traceback" not in response.text and str(tmp_path) not in response.text
            # A hang costs a read timeout (once for the HEAD, once for the GET at most), never more.
            assert elapsed < 2 * READ_TIMEOUT + 3, elapsed
            nothing_kept(origin, lying.digest)
        assert (await client.get("/health")).status_code == 200
        assert ("GET" in {method for method, _ in lying.requests}) is (mode != "hang")


async def get_or_cut(client: httpx.AsyncClient, path: str) -> httpx.Response | int:
    """GET ``path``: the response when it is not a 200 (read), else how many bytes of the 200
    came before its body was cut. A 200 whose body completes fails the test."""
    async with client.stream("GET", path) as response:
        if response.status_code != 200:
            await response.aread()
            return response
        received = 0
        try:
            async for chunk in response.aiter_raw():
                received += len(chunk)
        except httpx.HTTPError:
            return received
    raise AssertionError(f"a body of {received} bytes completed")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_writes_through_to_an_upstream_are_refused_before_anything_changes(origin_client: httpx.AsyncClient,
                                                                                origin: RunningDaemon) -> None:
    """An upstream's namespace is read-only: a commit with through=true is refused (UNSUPPORTED)
    before the commit, and re-opening an upload of a held blob asks no upstream (409 at once)."""
    namespace = "127.0.0.1:1/team/app"  # nothing listens there: any request would fail with 503
    data = random_bytes(70_000, seed=16)
    digest = Digest.of(data)
    uid = await start_upload(origin_client, namespace, str(digest))
    assert (await patch(origin_client, namespace, str(digest), uid, data, 0)).status_code == 200
    response = await commit(origin_client, namespace, str(digest), uid, through=True)
    assert_error(response, 405, "UNSUPPORTED")
    assert "read-only" in response.json()["errors"][0]["message"]
    assert digest.hex not in blob_files(Path(origin.config.data_dir))
    assert (await commit(origin_client, namespace, str(digest), uid, through=False)).status_code == 200
    assert_error(await origin_client.post(blob_path(namespace, digest, "/uploads")), 409, "BLOB_EXISTS")
