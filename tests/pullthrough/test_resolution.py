"""The index resolves upstream tags and manifests (issue 12, points 2 and 4), against a real
docker-registry upstream: kept whole (an index by tag, by digest and every child), air gap,
always_pull_latest, the tag TTL, stale-if-error, and clear errors for an unreachable upstream."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from swarmreg.errors import UPSTREAM_UNAVAILABLE
from swarmreg.index.pullthrough import MAX_CHILDREN, STALE_WAIT
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.proxy.helpers import DOCKER_MANIFEST
from tests.pullthrough.images import push_upstream_image, push_upstream_images, push_upstream_index
from tests.upstream.registries import docker_registry

HERD = ["origin", "tracker", "index", "proxy"]


@asynccontextmanager
async def herd(nursery: trio.Nursery, data_dir: Path, port: int, *overrides: str) -> AsyncIterator[RunningDaemon]:
    """A herd whose index pulls through to the docker-registry at 127.0.0.1:``port`` (plain HTTP)."""
    config = make_config(data_dir, f'registries=[{{name = "127.0.0.1:{port}", scheme = "http", '
                                   'connect_timeout = 2, read_timeout = 5}]', *overrides)
    running = await start_daemon(nursery, config, HERD)
    try:
        yield running
    finally:
        await running.stop()


async def manifest(herd: RunningDaemon, repository: str, reference: str) -> httpx.Response:
    """GET a manifest through the proxy's registry API (bytes from the origin, record from the index)."""
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as client:
        return await client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json"])})


def upstream_manifest_requests(log: Path) -> int:
    """How many manifest GETs and HEADs the upstream's access log shows."""
    return len(re.findall(r'"(?:GET|HEAD) /v2/\S+/manifests/', log.read_text(errors="replace")))


async def test_a_tag_is_fetched_once_then_served_from_the_cache(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"one" * 1000])
        repository = f"127.0.0.1:{port}/team/app"
        async with herd(nursery, tmp_path / "herd", port) as running:
            first = await manifest(running, repository, "v1")
            assert first.status_code == 200, first.text
            assert first.content == pushed.manifest
            assert first.headers["Docker-Content-Digest"] == pushed.digest
            asked = upstream_manifest_requests(tmp_path / "docker-registry.log")
            again = await manifest(running, repository, "v1")
            assert again.content == pushed.manifest
            assert upstream_manifest_requests(tmp_path / "docker-registry.log") == asked  # within tag_ttl
            # The manifest's blobs are linked in the repository (an agent's LinkedContent needs it).
            async with httpx.AsyncClient(base_url=running.url("index")) as index:
                for digest, blob in pushed.blobs.items():
                    linked = await index.get(f"/repositories/{repository}/blobs/{digest}")
                    assert linked.status_code == 200 and linked.json()["size"] == len(blob)
                tags = await index.get(f"/repositories/{repository}/tags")
                assert tags.json()["tags"] == ["v1"]


async def test_an_index_is_kept_whole_and_served_with_the_upstream_gone(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        amd = await push_upstream_image(base, "multi/arch", None, [b"amd64 layer"], arch="amd64")
        arm = await push_upstream_image(base, "multi/arch", None, [b"arm64 layer"], arch="arm64")
        index = await push_upstream_index(base, "multi/arch", "v2", [amd, arm])
        repository = f"127.0.0.1:{port}/multi/arch"
        data_dir = tmp_path / "herd"
        async with herd(nursery, data_dir, port) as running:
            # A child first, by digest (as containerd does after reading an index elsewhere)...
            child = await manifest(running, repository, amd.digest)
            assert child.status_code == 200 and child.content == amd.manifest
            # ...then the tag: the whole index, by tag and by digest, and every child.
            tagged = await manifest(running, repository, "v2")
            assert tagged.status_code == 200 and tagged.content == index.manifest
    # The upstream is gone: everything the tag names is still served, by tag and by digest.
    async with herd(nursery, data_dir, port, "air_gapped=true") as running:
        for reference, pushed in [("v2", index), (index.digest, index), (amd.digest, amd), (arm.digest, arm)]:
            response = await manifest(running, repository, reference)
            assert response.status_code == 200, (reference, response.text)
            assert response.content == pushed.manifest


async def test_air_gapped_never_asks_the_upstream(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        async with herd(nursery, tmp_path / "herd", port, "air_gapped=true") as running:
            response = await manifest(running, f"127.0.0.1:{port}/team/app", "v1")
            assert response.status_code == 404
            assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert upstream_manifest_requests(tmp_path / "docker-registry.log") == 0


async def test_always_pull_latest_follows_a_moved_tag_and_the_ttl_holds_others(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        first = await push_upstream_image(base, "team/app", "latest", [b"first"])
        await push_upstream_image(base, "team/app", "v1", [b"first"])
        repository = f"127.0.0.1:{port}/team/app"
        async with herd(nursery, tmp_path / "herd", port, "always_pull_latest=true", "tag_ttl=3600") as running:
            assert (await manifest(running, repository, "latest")).content == first.manifest
            assert (await manifest(running, repository, "v1")).content == first.manifest
            second = await push_upstream_image(base, "team/app", "latest", [b"second"])
            await push_upstream_image(base, "team/app", "v1", [b"second"])
            assert (await manifest(running, repository, "latest")).content == second.manifest
            # v1 moved too, but its TTL (an hour) has not run out: the cached one is served.
            assert (await manifest(running, repository, "v1")).content == first.manifest


async def test_an_expired_tag_is_resolved_again(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        first = await push_upstream_image(base, "team/app", "v1", [b"first"])
        repository = f"127.0.0.1:{port}/team/app"
        async with herd(nursery, tmp_path / "herd", port, "tag_ttl=0.5") as running:
            assert (await manifest(running, repository, "v1")).content == first.manifest
            second = await push_upstream_image(base, "team/app", "v1", [b"second"])
            await trio.sleep(0.6)
            assert (await manifest(running, repository, "v1")).content == second.manifest


async def test_stale_if_error_serves_the_cached_tag_and_logs_it(nursery, tmp_path: Path, caplog):
    data_dir = tmp_path / "herd"
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        repository = f"127.0.0.1:{port}/team/app"
        async with herd(nursery, data_dir, port, "tag_ttl=0") as running:
            assert (await manifest(running, repository, "v1")).content == pushed.manifest
    # The upstream is stopped; every pull of v1 asks it again (TTL 0), and falls back.
    async with herd(nursery, data_dir, port, "tag_ttl=0") as running:
        with caplog.at_level(logging.WARNING, logger="swarmreg.index.pullthrough"):
            response = await manifest(running, repository, "v1")
        assert response.status_code == 200 and response.content == pushed.manifest
        assert any("serving the cached" in record.getMessage() and f"127.0.0.1:{port}" in record.getMessage()
                   for record in caplog.records)
    async with herd(nursery, data_dir, port, "tag_ttl=0", "stale_if_error=false") as running:
        response = await manifest(running, repository, "v1")
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == UPSTREAM_UNAVAILABLE.code


async def test_stale_if_error_outlasts_a_hanging_upstream_with_the_default_timeouts(nursery, tmp_path: Path):
    """An upstream that accepts and never answers (a hung host) while a cached tag is due: with
    the default read_timeout (60 s) the index waited past the proxy's and agents' 30 s requests
    to it, so they answered UNAVAILABLE "index unavailable: ReadTimeout" and the cached tag that
    stale_if_error promises was never served. It is served after STALE_WAIT."""
    data_dir = tmp_path / "herd"
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        repository = f"127.0.0.1:{port}/team/app"
        async with herd(nursery, data_dir, port, "tag_ttl=0") as running:
            assert (await manifest(running, repository, "v1")).content == pushed.manifest
    with socket.socket() as listener:  # the same port now accepts connections and never answers
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        running = await start_daemon(nursery, make_config(
            data_dir, f'registries=[{{name = "127.0.0.1:{port}", scheme = "http"}}]', "tag_ttl=0"), HERD)
        try:
            with trio.fail_after(25):
                response = await manifest(running, repository, "v1")
            assert response.status_code == 200, response.text
            assert response.content == pushed.manifest
            # The next pulls in the outage do not wait STALE_WAIT again: served from the cache
            # at once, for STALE_RETRY (the bound is far below STALE_WAIT, not a speed claim).
            for _ in range(3):
                with trio.fail_after(STALE_WAIT / 2):
                    again = await manifest(running, repository, "v1")
                assert again.status_code == 200 and again.content == pushed.manifest
        finally:
            await running.stop()


async def test_an_uncached_image_with_the_upstream_down_is_a_clear_error(nursery, tmp_path: Path):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with herd(nursery, tmp_path / "herd", port) as running:
        with trio.fail_after(30):
            response = await manifest(running, f"127.0.0.1:{port}/team/app", "v1")
        assert response.status_code == 503
        error = response.json()["errors"][0]
        assert error["code"] == UPSTREAM_UNAVAILABLE.code
        assert f"127.0.0.1:{port}" in error["message"]
        assert "Traceback" not in response.text


async def test_a_hanging_upstream_times_out(nursery, tmp_path: Path):
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        async with herd(nursery, tmp_path / "herd", port) as running:
            with trio.fail_after(30):  # read_timeout = 5 s
                response = await manifest(running, f"127.0.0.1:{port}/team/app", "v1")
            assert response.status_code == 503
            assert response.json()["errors"][0]["code"] == UPSTREAM_UNAVAILABLE.code


async def test_a_hanging_upstream_with_the_default_timeouts_is_upstream_unavailable(nursery, tmp_path: Path):
    """docs/upstreams.md: an uncached image whose upstream cannot be reached is UPSTREAM_UNAVAILABLE
    naming the upstream. With the default read_timeout (60 s) the proxy (and an agent) used to give
    up on the index after its own 30 s and answer UNAVAILABLE "index unavailable: ReadTimeout",
    which blamed a healthy index (test_a_hanging_upstream_times_out sets read_timeout = 5)."""
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        running = await start_daemon(nursery, make_config(
            tmp_path / "herd", f'registries=[{{name = "127.0.0.1:{port}", scheme = "http"}}]'), HERD)
        try:
            with trio.fail_after(45):
                response = await manifest(running, f"127.0.0.1:{port}/team/app", "v1")
            assert response.status_code == 503
            error = response.json()["errors"][0]
            assert error["code"] == UPSTREAM_UNAVAILABLE.code and f"127.0.0.1:{port}" in error["message"], error
        finally:
            await running.stop()


async def test_an_unknown_upstream_tag_is_manifest_unknown(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        async with herd(nursery, tmp_path / "herd", port) as running:
            for _ in range(5):
                response = await manifest(running, f"127.0.0.1:{port}/team/app", "nope")
                assert response.status_code == 404
                assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        # The upstream's "no such tag" was believed for MISSING_TTL: one HEAD, not five.
        assert upstream_manifest_requests(tmp_path / "docker-registry.log") == 1


async def test_pulling_through_never_writes_to_the_upstream(nursery, tmp_path: Path):
    # Reading never writes upstream: the upstream's log shows only GET and HEAD from the herd.
    with docker_registry(tmp_path) as port:
        await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        pushed_log = len((tmp_path / "docker-registry.log").read_bytes())
        async with herd(nursery, tmp_path / "herd", port) as running:
            await manifest(running, f"127.0.0.1:{port}/team/app", "v1")
        later = (tmp_path / "docker-registry.log").read_bytes()[pushed_log:].decode(errors="replace")
        assert "GET /v2/team/app/manifests/" in later
        assert '"PUT ' not in later and '"POST ' not in later and '"PATCH ' not in later


async def test_an_index_listing_too_many_manifests_is_refused_before_fetching_them(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        children = await push_upstream_images(base, "big/index", MAX_CHILDREN + 1)
        await push_upstream_index(base, "big/index", "v1", children, archs=("amd64",) * len(children))
        async with herd(nursery, tmp_path / "herd", port) as running:
            response = await manifest(running, f"127.0.0.1:{port}/big/index", "v1")
            assert response.status_code == 502
            assert response.json()["errors"][0]["code"] == "UPSTREAM_ERROR"
            assert str(MAX_CHILDREN) in response.json()["errors"][0]["message"]
        assert upstream_manifest_requests(tmp_path / "docker-registry.log") == 2  # HEAD and GET of the index


async def test_an_agent_pulls_an_upstream_manifest_through_the_swarm(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", [b"layer"])
        async with herd(nursery, tmp_path / "herd", port) as running:
            agent = await start_daemon(nursery, make_config(
                tmp_path / "agent", f"agent.tracker={running.ready['roles']['tracker']['ws']}",
                f"agent.index={running.ready['roles']['index']['http']}"), ["agent"])
            try:
                async with httpx.AsyncClient(base_url=f"http://{agent.ready['roles']['agent']['registry']}",
                                             timeout=60) as client:
                    response = await client.get(f"/v2/127.0.0.1:{port}/team/app/manifests/v1",
                                                headers={"Accept": DOCKER_MANIFEST})
                    assert response.status_code == 200, response.text
                    assert response.content == pushed.manifest
            finally:
                await agent.stop()
