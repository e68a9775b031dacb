"""Every real client against a swarmreg cluster: push to the proxy, pull from the agents.

The cluster is child processes on 127.0.0.1 port 0: a herd (origin, tracker, index, proxy) and two
agents whose read-only registry ports serve what was pushed, the bytes coming through the swarm.
Digests are checked end to end: what the client recorded, what the proxy reports and what each
agent serves; afterwards each agent's store holds the blobs and its /stats shows they came over the
peer wire. Daemon logs are in the test's tmp_path (herd.log, agent-one.log, agent-two.log, dockerd.log).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from swarmreg.config import TrackerConfig
from swarmreg.devcluster import DaemonProcess
from swarmreg.registry.auth import hash_password
from tests.conftest import blob_files
from tests.proxy.helpers import RegistryAuth

from .clients import Containerd, Docker, Podman, Skopeo
from .layout import (
    INDEX,
    MANIFEST,
    Image,
    blob_digests,
    build_oci_index_layout,
    build_oci_layout,
    read_layout,
    write_docker_archive,
)
from .tools import hostport

pytestmark = pytest.mark.slow
MiB = 1 << 20
INLINE_MAX = TrackerConfig().inline_max  # the devcluster's tracker keeps the default
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([MANIFEST, INDEX, DOCKER_MANIFEST,
                    "application/vnd.docker.distribution.manifest.list.v2+json"])
USER, PASSWORD = "alice", "correct horse battery staple"

Spawn = Callable[..., Awaitable[DaemonProcess]]


@attrs.frozen
class Cluster:
    """A herd and two agents, as base URLs for the clients and processes for the checks."""

    herd: DaemonProcess
    agents: tuple[DaemonProcess, DaemonProcess]

    @property
    def proxy(self) -> str:
        return f"http://{self.herd.address('proxy', 'http')}"

    def registry(self, agent: DaemonProcess) -> str:
        return f"http://{agent.address('agent', 'registry')}"

    @property
    def registries(self) -> list[str]:
        return [self.registry(agent) for agent in self.agents]


async def start_cluster(spawn: Spawn, *herd_overrides: str) -> Cluster:
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], "store.fsync=false", *herd_overrides)
    one, two = [await spawn(name, ["agent"], "store.fsync=false",
                            f"agent.tracker={herd.address('tracker', 'ws')}",
                            f"agent.index={herd.address('index', 'http')}")
                for name in ("agent-one", "agent-two")]
    return Cluster(herd, (one, two))


@pytest.fixture
async def cluster(spawn: Spawn) -> Cluster:
    """A swarmreg cluster without authentication."""
    return await start_cluster(spawn)


@pytest.fixture(params=["basic", "token"])
async def auth_cluster(spawn: Spawn, request: pytest.FixtureRequest) -> Cluster:
    """A swarmreg cluster whose proxy asks user alice to sign in, with basic auth on every request
    or with Docker's token flow; the agents ask for nothing."""
    return await start_cluster(spawn, f"proxy.users.{USER}={hash_password(PASSWORD)}",
                               f'proxy.auth="{request.param}"')


async def manifest_of(registry: str, repo: str, ref: str, *,
                      auth: tuple[str, str] | None = None) -> tuple[str, bytes]:
    """(Docker-Content-Digest, body) of a manifest GET; the body must hash to that digest."""
    async with httpx.AsyncClient(timeout=120, auth=RegistryAuth(*auth) if auth else None) as client:
        response = await client.get(f"{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        head = await client.head(f"{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    assert response.status_code == 200, (response, response.text)
    assert head.status_code == 200, head
    digest = response.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert head.headers["Docker-Content-Digest"] == digest
    return digest, response.content


async def assert_same_manifest_everywhere(cluster: Cluster, repo: str, ref: str, expected: str, *,
                                          auth: tuple[str, str] | None = None) -> bytes:
    """The proxy and both agents answer ``expected`` for ``repo:ref``, with the same bytes."""
    proxy_digest, body = await manifest_of(cluster.proxy, repo, ref, auth=auth)
    assert proxy_digest == expected
    for registry in cluster.registries:
        assert await manifest_of(registry, repo, ref) == (expected, body), registry
    return body


async def agent_stats(agent: DaemonProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{agent.url('agent', 'http')}/stats")
    assert response.status_code == 200, response
    return response.json()


def held(agent: DaemonProcess) -> dict[str, int]:
    """The agent's committed blobs: digest -> size."""
    return {f"sha256:{hex_}": size for hex_, size in blob_files(agent.data_dir).items()}


async def assert_came_through_the_swarm(agent: DaemonProcess, sizes: dict[str, int]) -> None:
    """The agent holds every blob of ``sizes`` (digest -> size), each fetched through the swarm:
    a complete torrent whose bytes arrived over the peer wire from the origin or the other agent,
    or, for a blob up to ``tracker.inline_max``, inline in the tracker's metainfo reply."""
    store = held(agent)
    assert {d: store.get(d) for d in sizes} == sizes, f"{agent.name} store: {store}"
    stats = await agent_stats(agent)
    torrents = {t["digest"]: t for t in stats["torrents"]}
    inline = stats["inline"]["blobs"]
    for digest, size in sizes.items():
        if size == 0:
            continue  # the empty blob has no torrent
        if digest in inline:
            assert inline[digest] == size <= INLINE_MAX, (digest, size)
            continue
        torrent = torrents.get(digest)
        assert torrent is not None, f"{agent.name} has no torrent for {digest}: {sorted(torrents)}"
        assert torrent["complete"] and torrent["size"] == size, torrent
        assert sum(torrent["downloaded_from"].values()) >= size, torrent
    totals = stats["totals"]["downloaded_from"]
    assert totals["origin"] + totals["agent"] + stats["inline"]["bytes"] >= sum(sizes.values())
    assert any(size > INLINE_MAX for size in sizes.values()), "some layer travelled the peer wire"


def sizes_of(manifest: dict[str, Any]) -> dict[str, int]:
    """digest -> size of an image manifest's config and layers."""
    return {d["digest"]: d["size"] for d in [manifest["config"], *manifest["layers"]]}


def image_sizes(image: Image) -> dict[str, int]:
    return {d.digest: d.size for d in (image.manifest, image.config, *image.layers)}


async def in_parallel(*jobs: Callable[[], Awaitable[Any]]) -> None:
    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(job)


async def push_layout(skopeo: Skopeo, layout: Path, registry: str, repo_tag: str, tmp_path: Path, *,
                      all_images: bool = False, creds: str | None = None) -> str:
    """``skopeo copy oci:<layout> docker://...``; returns the manifest digest skopeo recorded."""
    digest_file = tmp_path / f"digest-{repo_tag.replace('/', '_').replace(':', '_')}"
    flags = ["--all"] if all_images else []
    flags += ["--dest-creds", creds] if creds else []
    await skopeo("copy", "--dest-tls-verify=false", "--digestfile", str(digest_file), *flags,
                 f"oci:{layout}:latest", f"docker://{hostport(registry)}/{repo_tag}")
    return digest_file.read_text().strip()


async def test_skopeo_copies_a_big_image_to_the_proxy_and_back_from_both_agents(
        skopeo: Skopeo, cluster: Cluster, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = await trio.to_thread.run_sync(build_oci_layout, layout, [64 * MiB, 4096])
    assert image.layers[0].size >= 64 * MiB and len(image.layers) == 2
    recorded = await push_layout(skopeo, layout, cluster.proxy, "test/big:latest", tmp_path)
    assert recorded == image.manifest.digest
    raw = await skopeo.inspect(cluster.proxy, "test/big:latest", raw=True)
    assert [layer["digest"] for layer in raw["layers"]] == [d.digest for d in image.layers]

    outs = [tmp_path / "from-agent-one", tmp_path / "from-agent-two"]
    await in_parallel(*[lambda r=registry, o=out: skopeo.pull(r, "test/big:latest", o)
                        for registry, out in zip(cluster.registries, outs, strict=True)])
    for out in outs:
        assert read_layout(out)["manifests"][0]["digest"] == image.manifest.digest
        assert await trio.to_thread.run_sync(blob_digests, out) == set(image.blobs)
    await assert_same_manifest_everywhere(cluster, "test/big", "latest", image.manifest.digest)
    for agent in cluster.agents:
        await assert_came_through_the_swarm(agent, image_sizes(image))


async def test_docker_pushes_to_the_proxy_and_pulls_from_both_agents(
        docker: Docker, cluster: Cluster, tmp_path: Path) -> None:
    image = build_oci_layout(tmp_path / "layout", [8 * MiB, b"docker through the swarm"])
    archive = write_docker_archive(tmp_path / "layout", image, tmp_path / "image.tar", "swarmreg-test/loaded:latest")
    await docker.load(archive)
    proxy_ref = f"{hostport(cluster.proxy)}/test/docker:latest"
    await docker("tag", "swarmreg-test/loaded:latest", proxy_ref)
    await docker("push", proxy_ref)
    [recorded] = await docker.repo_digests(proxy_ref)
    pushed = recorded.rpartition("@")[2]
    # docker re-compresses the layers: their digests come from the manifest it pushed.
    body = await assert_same_manifest_everywhere(cluster, "test/docker", "latest", pushed)
    manifest = json.loads(body)
    assert manifest["mediaType"] == DOCKER_MANIFEST and manifest["config"]["digest"] == image.config.digest
    await docker("rmi", proxy_ref, "swarmreg-test/loaded:latest")

    for agent, registry in zip(cluster.agents, cluster.registries, strict=True):
        ref = f"{hostport(registry)}/test/docker:latest"
        await docker("pull", ref)
        assert await docker.image_id(ref) == image.config.digest
        assert await docker.repo_digests(ref) == [f"{hostport(registry)}/test/docker@{pushed}"]
        await docker("rmi", ref)  # so the next agent serves every layer again
        await assert_came_through_the_swarm(agent, {pushed: len(body), **sizes_of(manifest)})

    # The same image in another repository: docker mounts the layers across repositories on the
    # proxy, and an agent serves it by digest.
    await docker.load(archive)
    other_ref = f"{hostport(cluster.proxy)}/other/docker:v2"
    await docker("tag", "swarmreg-test/loaded:latest", other_ref)
    mounted = await docker("push", other_ref)
    assert mounted.stdout.count("Mounted from test/docker") == len(manifest["layers"]), mounted.stdout
    assert f"digest: {pushed}" in mounted.stdout
    await docker("rmi", other_ref, "swarmreg-test/loaded:latest")
    by_digest = f"{hostport(cluster.registries[1])}/other/docker@{pushed}"
    await docker("pull", by_digest)
    assert await docker.image_id(by_digest) == image.config.digest


async def pushed_small_image(skopeo: Skopeo, cluster: Cluster, tmp_path: Path, repo: str) -> Image:
    image = await trio.to_thread.run_sync(build_oci_layout, tmp_path / "layout", [4 * MiB, 100])
    assert await push_layout(skopeo, tmp_path / "layout", cluster.proxy, f"{repo}:latest",
                             tmp_path) == image.manifest.digest
    return image


async def test_podman_pulls_from_an_agent(podman: Podman, skopeo: Skopeo, cluster: Cluster,
                                          tmp_path: Path) -> None:
    image = await pushed_small_image(skopeo, cluster, tmp_path, "test/podman")
    agent, registry = cluster.agents[0], cluster.registries[0]
    ref = f"{hostport(registry)}/test/podman:latest"
    await podman.pull(ref)
    assert await podman.image_digest(ref) == image.manifest.digest
    image_id = (await podman("image", "inspect", "--format", "{{.Id}}", ref)).stdout.strip()
    assert "sha256:" + image_id == image.config.digest
    await assert_same_manifest_everywhere(cluster, "test/podman", "latest", image.manifest.digest)
    await assert_came_through_the_swarm(agent, image_sizes(image))


async def test_ctr_pulls_from_an_agent(ctr: Containerd, skopeo: Skopeo, cluster: Cluster,
                                       tmp_path: Path) -> None:
    image = await pushed_small_image(skopeo, cluster, tmp_path, "test/ctr")
    agent, registry = cluster.agents[1], cluster.registries[1]
    ref = f"{hostport(registry)}/test/ctr:latest"
    await ctr.pull(ref)
    assert await ctr.image_target(ref) == image.manifest.digest
    assert await content_digests(ctr) == set(image.blobs)
    await assert_same_manifest_everywhere(cluster, "test/ctr", "latest", image.manifest.digest)
    await assert_came_through_the_swarm(agent, image_sizes(image))


async def content_digests(ctr: Containerd) -> set[str]:
    return set((await ctr("content", "ls", "--quiet")).stdout.split())


def platform_blobs(image: Image) -> set[str]:
    """The config and layers of one platform's image (what only that platform needs)."""
    return {image.config.digest, *(d.digest for d in image.layers)}


async def test_a_multi_arch_index_pulls_the_right_platform(
        skopeo: Skopeo, ctr: Containerd, podman: Podman, docker: Docker, cluster: Cluster,
        tmp_path: Path) -> None:
    multi = build_oci_index_layout(tmp_path / "layout", {"linux/amd64": [3 * MiB, 1024],
                                                         "linux/arm64": [5 * MiB, 2048]})
    amd64, arm64 = multi.images["linux/amd64"], multi.images["linux/arm64"]
    recorded = await push_layout(skopeo, tmp_path / "layout", cluster.proxy, "test/multi:latest", tmp_path,
                                 all_images=True)
    assert recorded == multi.index.digest
    index = json.loads(await assert_same_manifest_everywhere(cluster, "test/multi", "latest", multi.index.digest))
    assert index["mediaType"] == INDEX
    assert [m["digest"] for m in index["manifests"]] == [amd64.manifest.digest, arm64.manifest.digest]
    one, two = cluster.agents
    registry_one, registry_two = cluster.registries

    # skopeo picks amd64 from agent one: agent one fetched amd64's blobs and none of arm64's.
    out = tmp_path / "skopeo-amd64"
    await skopeo.pull(registry_one, "test/multi:latest", out, arch="amd64")
    assert read_layout(out)["manifests"][0]["digest"] == amd64.manifest.digest
    assert blob_digests(out) == set(amd64.blobs)
    await assert_came_through_the_swarm(one, image_sizes(amd64))
    assert not platform_blobs(arm64) & set(held(one)), held(one)

    # ctr picks arm64 from agent two: agent two fetched arm64's blobs and none of amd64's.
    ref_two = f"{hostport(registry_two)}/test/multi:latest"
    await ctr.pull(ref_two, platform="linux/arm64")
    assert await ctr.image_target(ref_two) == multi.index.digest
    content = await content_digests(ctr)
    assert set(arm64.blobs) | {multi.index.digest} <= content
    assert not platform_blobs(amd64) & content
    await assert_came_through_the_swarm(two, image_sizes(arm64))
    assert not platform_blobs(amd64) & set(held(two)), held(two)

    # podman picks arm64 from agent one, which now has to fetch arm64's blobs too.
    ref_one = f"{hostport(registry_one)}/test/multi:latest"
    await podman.pull(ref_one, arch="arm64")
    image_id = (await podman("image", "inspect", "--format", "{{.Id}}", ref_one)).stdout.strip()
    assert "sha256:" + image_id == arm64.config.digest
    assert await podman.image_digest(ref_one) == multi.index.digest  # podman records what it pulled
    repo_digests = (await podman("image", "inspect", "--format", "{{json .RepoDigests}}", ref_one)).stdout
    assert f"{hostport(registry_one)}/test/multi@{arm64.manifest.digest}" in json.loads(repo_digests)
    await assert_came_through_the_swarm(one, image_sizes(arm64))

    # docker picks its own platform (amd64 here) from agent two, which then fetches that image's blobs.
    native = multi.images[f"linux/{(await docker('version', '--format', '{{.Server.Arch}}')).stdout.strip()}"]
    await docker("pull", ref_two)
    assert await docker.image_id(ref_two) == native.config.digest
    assert await docker.repo_digests(ref_two) == [f"{hostport(registry_two)}/test/multi@{multi.index.digest}"]
    await assert_came_through_the_swarm(two, image_sizes(native))


async def test_skopeo_creds_against_a_proxy_with_authentication(skopeo: Skopeo, auth_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    cluster = auth_cluster
    image = await trio.to_thread.run_sync(build_oci_layout, tmp_path / "layout", [2 * MiB, 300])
    dest = f"docker://{hostport(cluster.proxy)}/test/auth:latest"
    for creds in ([], ["--dest-creds", f"{USER}:wrong"], ["--dest-creds", f"mallory:{PASSWORD}"]):
        refused = await skopeo("copy", "--dest-tls-verify=false", *creds, f"oci:{tmp_path / 'layout'}:latest",
                               dest, check=False)
        assert refused.returncode != 0
        assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr, refused.stderr
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"{cluster.proxy}/v2/")).status_code == 401
        assert (await client.get(f"{cluster.proxy}/v2/test/auth/manifests/latest")).status_code == 401

    creds = f"{USER}:{PASSWORD}"
    assert await push_layout(skopeo, tmp_path / "layout", cluster.proxy, "test/auth:latest", tmp_path,
                             creds=creds) == image.manifest.digest
    raw = await skopeo.inspect(cluster.proxy, "test/auth:latest", raw=True, creds=creds)
    assert [layer["digest"] for layer in raw["layers"]] == [d.digest for d in image.layers]
    await assert_same_manifest_everywhere(cluster, "test/auth", "latest", image.manifest.digest,
                                          auth=(USER, PASSWORD))
    # The agents on localhost ask for no credentials.
    for agent, registry in zip(cluster.agents, cluster.registries, strict=True):
        out = tmp_path / f"pulled-{agent.name}"
        await skopeo.pull(registry, "test/auth:latest", out)
        assert read_layout(out)["manifests"][0]["digest"] == image.manifest.digest
        assert blob_digests(out) == set(image.blobs)
        await assert_came_through_the_swarm(agent, image_sizes(image))


async def test_docker_login_against_a_proxy_with_authentication(docker: Docker, auth_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    cluster = auth_cluster
    image = build_oci_layout(tmp_path / "layout", [2 * MiB, b"login"])
    await docker.load(write_docker_archive(tmp_path / "layout", image, tmp_path / "image.tar",
                                           "swarmreg-test/login:latest"))
    proxy_ref = f"{hostport(cluster.proxy)}/test/login:latest"
    await docker("tag", "swarmreg-test/login:latest", proxy_ref)
    denied = await docker("push", proxy_ref, check=False)
    assert denied.returncode != 0
    # Basic auth: docker has no credentials to send; tokens: an anonymous token grants nothing.
    assert any(why in denied.stderr.lower() for why in ("no basic auth credentials", "unauthorized", "denied")), denied

    wrong = await docker("login", "--username", USER, "--password-stdin", hostport(cluster.proxy),
                         stdin=b"wrong", check=False)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower(), wrong
    login = await docker.login(cluster.proxy, USER, PASSWORD)
    assert "Login Succeeded" in login.stdout
    assert hostport(cluster.proxy) in (docker.config_dir / "config.json").read_text()

    await docker("push", proxy_ref)
    [recorded] = await docker.repo_digests(proxy_ref)
    pushed = recorded.rpartition("@")[2]
    manifest = json.loads(await assert_same_manifest_everywhere(cluster, "test/login", "latest", pushed,
                                                                auth=(USER, PASSWORD)))
    await docker("rmi", proxy_ref, "swarmreg-test/login:latest")
    # Pulls from an agent need no login (the agent's registry has no users).
    agent_ref = f"{hostport(cluster.registries[0])}/test/login:latest"
    await docker("pull", agent_ref)
    assert await docker.image_id(agent_ref) == image.config.digest
    assert await docker.repo_digests(agent_ref) == [f"{hostport(cluster.registries[0])}/test/login@{pushed}"]
    await assert_came_through_the_swarm(cluster.agents[0], sizes_of(manifest))
