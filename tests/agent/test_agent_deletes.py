"""Agents honour the index: deleted tags, manifests and blob links stop being served within
``agent.tag_ttl``, and a blob is served only under a repository that links it."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error
from tests.proxy.helpers import digest_of, push_blob, push_image

TTL = 0.5


async def start_cluster(nursery: trio.Nursery, tmp_path: Path) -> tuple[RunningDaemon, RunningDaemon]:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}",
        f"agent.tag_ttl={TTL}"), ["agent"])
    return herd, agent


async def eventually_status(client: httpx.AsyncClient, path: str, status: int, code: str) -> None:
    """``path`` answers ``status`` with ``code`` after the TTL (and not much later)."""
    await trio.sleep(TTL)
    with trio.fail_after(5 * TTL):
        while True:
            response = await client.get(path)
            if response.status_code == status:
                assert_error(response, status, code)
                return
            await trio.sleep(TTL / 5)


async def test_a_deleted_tag_or_manifest_stops_being_served_within_the_tag_ttl(nursery: trio.Nursery,
                                                                             tmp_path: Path) -> None:
    herd, agent = await start_cluster(nursery, tmp_path)
    repo = "team/deleted"
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        first, _ = await push_image(proxy, repo, "v1", [random_bytes(2 << 20, seed=1)])
        second, manifest = await push_image(proxy, repo, "v2", [random_bytes(50_000, seed=2)])
        await proxy.put(f"/v2/{repo}/manifests/v3", content=manifest,
                        headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        for reference in ("v1", first, "v2", "v3", second):  # pulled: cached and held
            assert (await registry.get(f"/v2/{repo}/manifests/{reference}")).status_code == 200

        # The tag: gone from the agent within the TTL; the manifest stays by digest.
        assert (await proxy.delete(f"/v2/{repo}/manifests/v1")).status_code == 202
        await eventually_status(registry, f"/v2/{repo}/manifests/v1", 404, "MANIFEST_UNKNOWN")
        assert (await registry.get(f"/v2/{repo}/manifests/{first}")).status_code == 200

        # The manifest by digest: gone with its tags, although the agent holds its bytes.
        assert (await proxy.delete(f"/v2/{repo}/manifests/{second}")).status_code == 202
        await eventually_status(registry, f"/v2/{repo}/manifests/{second}", 404, "MANIFEST_UNKNOWN")
        for tag in ("v2", "v3"):
            assert_error(await registry.get(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
        assert (await registry.head(f"/v2/{repo}/manifests/{second}")).status_code == 404
        assert (await registry.get(f"/v2/{repo}/manifests/{first}")).status_code == 200


async def test_an_agent_serves_a_blob_only_under_a_repository_that_links_it(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    herd, agent = await start_cluster(nursery, tmp_path)
    secret, small = random_bytes(2 << 20, seed=3), random_bytes(10_000, seed=4)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        await push_image(proxy, "team/b", "v1", [secret, small])
        await push_image(proxy, "team/a", "v1", [random_bytes(1000, seed=5)])
        for blob in (secret, small):
            path = f"/v2/team/a/blobs/{digest_of(blob)}"
            # Asked under A before B's pull: the swarm would fetch it, the index says no.
            assert_error(await registry.get(path), 404, "BLOB_UNKNOWN")
            assert (await registry.head(path)).status_code == 404
            assert (await registry.get(f"/v2/team/b/blobs/{digest_of(blob)}")).content == blob
            # Now held by the agent: still not served under A (the proxy does not either).
            await trio.sleep(TTL)  # past the cached negative answer, too
            assert_error(await registry.get(path), 404, "BLOB_UNKNOWN")
            assert_error(await registry.get(path, headers={"Range": "bytes=0-9"}), 404, "BLOB_UNKNOWN")
            assert_error(await proxy.get(path), 404, "BLOB_UNKNOWN")
        # A mount links it in A: then A serves it (once its cached "no" has expired).
        mounted = await proxy.post("/v2/team/a/blobs/uploads/", params={"mount": digest_of(secret), "from": "team/b"})
        assert mounted.status_code == 201
        await trio.sleep(TTL)
        assert (await registry.get(f"/v2/team/a/blobs/{digest_of(secret)}")).content == secret


async def test_a_deleted_blob_link_stops_being_served_even_if_a_manifest_uses_it(nursery: trio.Nursery,
                                                                              tmp_path: Path) -> None:
    # The proxy deletes a blob's link as distribution does, manifests or not (docs/security.md);
    # agents and proxy alike stop serving the blob in that repository.
    herd, agent = await start_cluster(nursery, tmp_path)
    repo, layer = "team/unlinked", random_bytes(2 << 20, seed=6)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        manifest_digest, _ = await push_image(proxy, repo, "v1", [layer])
        await push_blob(proxy, "team/other", layer)
        path = f"/v2/{repo}/blobs/{digest_of(layer)}"
        assert (await registry.get(path)).content == layer
        assert (await proxy.delete(path)).status_code == 202
        assert_error(await proxy.get(path), 404, "BLOB_UNKNOWN")
        await eventually_status(registry, path, 404, "BLOB_UNKNOWN")
        assert_error(await proxy.delete(path), 404, "BLOB_UNKNOWN")
        # The manifest is still there; other repositories keep the blob.
        assert (await registry.get(f"/v2/{repo}/manifests/{manifest_digest}")).status_code == 200
        assert (await registry.get(f"/v2/team/other/blobs/{digest_of(layer)}")).content == layer
