"""The agent's read-only registry port: images pushed to the proxy, pulled through the swarm."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from trio.testing import MockClock

from swarmreg.digest import Digest
from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error
from tests.proxy.helpers import DOCKER_MANIFEST, digest_of, push_image

REPO = "team/pulled"


async def test_pull_through_the_agent(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}"),
        ["agent"])
    layers = [random_bytes(3 << 20, seed=1), random_bytes(100_000, seed=2)]
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest, manifest = await push_image(proxy, REPO, "v1", layers)
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        assert (await registry.get("/v2/")).json() == {}
        response = await registry.get(f"/v2/{REPO}/manifests/v1")
        assert response.content == manifest
        assert response.headers["content-type"] == DOCKER_MANIFEST
        assert response.headers["docker-content-digest"] == digest
        head = await registry.head(f"/v2/{REPO}/manifests/{digest}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(manifest))
        for layer in layers:
            assert (await registry.get(f"/v2/{REPO}/blobs/{digest_of(layer)}")).content == layer
        ranged = await registry.get(f"/v2/{REPO}/blobs/{digest_of(layers[0])}", headers={"Range": "bytes=5-9"})
        assert ranged.status_code == 206 and ranged.content == layers[0][5:10]
        assert (await registry.get(f"/v2/{REPO}/tags/list")).json() == {"name": REPO, "tags": ["v1"]}
        # Read-only: every other method is refused in the spec's format, and nothing changes.
        for method, path in [("PUT", f"/v2/{REPO}/manifests/v2"), ("DELETE", f"/v2/{REPO}/manifests/v1"),
                             ("POST", f"/v2/{REPO}/blobs/uploads/"), ("PATCH", f"/v2/{REPO}/blobs/uploads/x"),
                             ("DELETE", f"/v2/{REPO}/blobs/{digest_of(layers[1])}")]:
            assert_error(await registry.request(method, path, content=b"{}"), 405, "UNSUPPORTED")
        assert_error(await registry.get(f"/v2/{REPO}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
        assert_error(await registry.get(f"/v2/{REPO}/blobs/{digest_of(b'nobody')}"), 404, "BLOB_UNKNOWN")
    held = blob_files(Path(agent.config.data_dir))
    assert {digest_of(layer).removeprefix("sha256:") for layer in layers} <= set(held)


async def test_the_agent_caches_manifest_records_and_briefly_tags(nursery: trio.Nursery, tmp_path: Path,
                                                                 mock_clock: MockClock) -> None:
    from swarmreg.agent.index_cache import CachedIndex
    from swarmreg.index.client import IndexClient

    index = await start_daemon(nursery, make_config(tmp_path / "index"), ["index"])
    async with IndexClient(index.ready["roles"]["index"]["http"]) as client:
        cached = CachedIndex(client, tag_ttl=0.5)
        first, second = digest_of(b"one"), digest_of(b"two")
        for digest in (first, second):
            await client.put_manifest(REPO, digest, media_type=DOCKER_MANIFEST, size=3)
        await client.put_tag(REPO, "t", first)
        assert await cached.get_tag(REPO, "t") == first
        await client.put_tag(REPO, "t", second)
        mock_clock.jump(0.4)  # trio's clock moves only when told: however slow the machine
        assert await cached.get_tag(REPO, "t") == first, "reused within the TTL"
        mock_clock.jump(0.2)
        assert await cached.get_tag(REPO, "t") == second
        meta = await cached.get_manifest(REPO, first)
        await client.delete_manifest(REPO, first)
        mock_clock.jump(0.4)
        assert await cached.get_manifest(REPO, first) == meta, "reused within the TTL"
        mock_clock.jump(0.2)
        assert await cached.get_manifest(REPO, first) is None, "a deleted manifest is gone after the TTL"
        three = digest_of(b"three")
        assert await cached.get_manifest(REPO, three) is None
        await client.put_manifest(REPO, three, media_type=DOCKER_MANIFEST, size=3)
        assert await cached.get_manifest(REPO, three) is not None, "an unknown manifest is not cached"
        # Blob links, found or not, are kept for the TTL too.
        await client.link_blob(REPO, digest_of(b"blob"), 4)
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"blob"))) == 4
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"later"))) is None
        await client.unlink_blob(REPO, digest_of(b"blob"))
        await client.link_blob(REPO, digest_of(b"later"), 5)
        mock_clock.jump(0.4)
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"blob"))) == 4
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"later"))) is None
        mock_clock.jump(0.2)
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"blob"))) is None
        assert await cached.blob_size(REPO, Digest.parse(digest_of(b"later"))) == 5


async def test_concurrent_misses_share_one_index_request(nursery: trio.Nursery, tmp_path: Path) -> None:
    from swarmreg.agent.index_cache import CachedIndex
    from swarmreg.index.client import IndexClient

    requests: list[str] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(f"{request.method} {request.url.path}")
            return await super().handle_async_request(request)

    index = await start_daemon(nursery, make_config(tmp_path / "index"), ["index"])
    async with IndexClient(index.ready["roles"]["index"]["http"], transport=Counting()) as client:
        digest = digest_of(b"one")
        await client.put_manifest(REPO, digest, media_type=DOCKER_MANIFEST, size=3)
        await client.put_tag(REPO, "t", digest)
        await client.link_blob(REPO, digest, 3)
        requests.clear()
        cached = CachedIndex(client, tag_ttl=60, nursery=nursery)
        answers: list[object] = []

        async def ask() -> None:
            answers.append((await cached.get_tag(REPO, "t"), await cached.get_manifest(REPO, digest),
                            await cached.blob_size(REPO, Digest.parse(digest)),
                            await cached.blob_size(REPO, Digest.parse(digest_of(b"none")))))

        async with trio.open_nursery() as askers:
            for _ in range(20):
                askers.start_soon(ask)
        assert len(answers) == 20 and len(set(map(repr, answers))) == 1
        assert answers[0][0] == digest and answers[0][2] == 3 and answers[0][3] is None  # type: ignore[index]
        assert len(requests) == 4, requests


async def test_the_agent_keeps_whether_a_repository_exists(nursery: trio.Nursery, tmp_path: Path,
                                                           mock_clock: MockClock) -> None:
    """A bare name's fallback to default_registry asks on every miss whether swarmreg has the
    repository (a tag list of n=0): the agent keeps that answer for its tag TTL, found or not."""
    from swarmreg.agent.index_cache import CachedIndex
    from swarmreg.errors import NAME_UNKNOWN, SwarmregError
    from swarmreg.index.client import IndexClient
    from swarmreg.registry.lookup import has_repository

    index = await start_daemon(nursery, make_config(tmp_path / "index"), ["index"])
    async with IndexClient(index.ready["roles"]["index"]["http"]) as client:
        cached = CachedIndex(client, tag_ttl=0.5)
        assert not await has_repository(cached, REPO)
        await client.link_blob(REPO, digest_of(b"blob"), 4)
        assert not await has_repository(cached, REPO), "reused within the TTL"
        assert await has_repository(client, REPO)
        mock_clock.jump(0.6)
        assert await has_repository(cached, REPO)
        await client.unlink_blob(REPO, digest_of(b"blob"))
        assert await has_repository(cached, REPO), "reused within the TTL"
        mock_clock.jump(0.6)
        try:
            await cached.list_tags(REPO, 0)
        except SwarmregError as error:
            assert error.code is NAME_UNKNOWN
        else:
            raise AssertionError("the repository is gone")
        # Other pages are asked as they are.
        await client.link_blob(REPO, digest_of(b"blob"), 4)
        assert await cached.list_tags(REPO) == ([], None)
