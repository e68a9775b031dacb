"""Pull-through end to end (issue 12, points 2 and 8): agents pull upstream images through the
swarm from a real docker-registry (plain, htpasswd, TLS, mTLS) and from our own proxy in token
mode; the upstream serves every blob once, however many agents pull; the cache serves on with
the upstream stopped."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from tests.conftest import RunningDaemon, blob_files, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error
from tests.proxy.helpers import DOCKER_MANIFEST, OCI_INDEX, RegistryAuth, push_image
from tests.pullthrough.images import Pushed, push_upstream_image, push_upstream_index
from tests.upstream.registries import docker_registry, upstream_blob_gets
from tests.upstream.test_client import PASSWORD, start_token_proxy

HERD = ["origin", "tracker", "index", "proxy"]
ACCEPT = f"{OCI_INDEX}, {DOCKER_MANIFEST}"
MiB = 1 << 20


@asynccontextmanager
async def cluster(nursery: trio.Nursery, data_dir: Path, registry: str, *herd_settings: str,
                  agents: int = 1) -> AsyncIterator[tuple[RunningDaemon, list[RunningDaemon]]]:
    """A herd pulling through to ``registry`` (a ``[[registries]]`` inline table) and ``agents``
    agents of it, each daemon's data under ``data_dir``."""
    herd = await start_daemon(nursery, make_config(data_dir / "herd", f"registries=[{registry}]", *herd_settings),
                              HERD)
    started = []
    try:
        for i in range(agents):
            started.append(await start_daemon(nursery, make_config(
                data_dir / f"agent{i}", f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
                f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"]))
        yield herd, started
    finally:
        for agent in started:
            await agent.stop()
        await herd.stop()


def registry_url(agent: RunningDaemon) -> str:
    return f"http://{agent.ready['roles']['agent']['registry']}"


async def pull(base_url: str, repository: str, reference: str) -> dict[str, bytes]:
    """A docker-style pull of an image manifest (in-path name): manifest, config and layers, each
    checked by the caller; returns every blob by digest, the manifest under its own."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        response = await client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
        assert response.status_code == 200, response.text
        got = {response.headers["Docker-Content-Digest"]: response.content}
        document = response.json()
        for descriptor in [document["config"], *document["layers"]]:
            blob = await client.get(f"/v2/{repository}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200, blob.text
            got[descriptor["digest"]] = blob.content
        return got


def expect(pushed: Pushed) -> dict[str, bytes]:
    return {pushed.digest: pushed.manifest, **pushed.blobs}


async def test_cold_and_warm_pulls_fetch_each_blob_from_the_upstream_once(nursery, tmp_path: Path):
    layers = [random_bytes(3 * MiB, seed=1), random_bytes(1 * MiB, seed=2), b"small layer"]
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", layers)
        repository = f"127.0.0.1:{port}/team/app"
        registry = f'{{name = "127.0.0.1:{port}", scheme = "http"}}'
        async with cluster(nursery, tmp_path, registry, agents=2) as (herd, agents):
            assert await pull(registry_url(agents[0]), repository, "v1") == expect(pushed)  # cold
            assert await pull(registry_url(agents[0]), repository, "v1") == expect(pushed)  # warm
            assert await pull(registry_url(agents[1]), repository, "v1") == expect(pushed)  # another host
            assert upstream_blob_gets(tmp_path / "docker-registry.log") == dict.fromkeys(pushed.blobs, 1)
            # The herd holds every blob under its digest, nothing else.
            held = blob_files(tmp_path / "herd")
            assert set(expect(pushed)) <= {f"sha256:{name}" for name in held}
    # The upstream is gone: a new host still pulls the image, by tag and by digest, from the swarm.
    async with cluster(nursery, tmp_path, registry, agents=1) as (herd, agents):
        fresh = await start_daemon(nursery, make_config(
            tmp_path / "fresh", f"agent.tracker={herd.ready['roles']['tracker']['ws']}",
            f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"])
        try:
            assert await pull(registry_url(fresh), repository, "v1") == expect(pushed)
            assert await pull(registry_url(fresh), repository, pushed.digest) == expect(pushed)
        finally:
            await fresh.stop()


async def test_two_agents_pulling_one_cold_image_at_once_cost_the_upstream_one_copy(nursery, tmp_path: Path):
    layers = [random_bytes(8 * MiB, seed=3), random_bytes(2 * MiB, seed=4)]
    with docker_registry(tmp_path) as port:
        pushed = await push_upstream_image(f"http://127.0.0.1:{port}", "team/app", "v1", layers)
        repository = f"127.0.0.1:{port}/team/app"
        async with cluster(nursery, tmp_path, f'{{name = "127.0.0.1:{port}", scheme = "http"}}',
                           agents=2) as (_herd, agents):
            results: list[dict[str, bytes]] = []

            async def pull_into(agent: RunningDaemon) -> None:
                results.append(await pull(registry_url(agent), repository, "v1"))

            async with trio.open_nursery() as pulls:
                for agent in agents:
                    pulls.start_soon(pull_into, agent)
            assert results == [expect(pushed)] * 2
        assert upstream_blob_gets(tmp_path / "docker-registry.log") == dict.fromkeys(pushed.blobs, 1)


async def test_a_multi_arch_child_by_digest_then_the_tag_with_the_upstream_stopped(nursery, tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        amd = await push_upstream_image(base, "multi/arch", None, [random_bytes(MiB, seed=5)], arch="amd64")
        arm = await push_upstream_image(base, "multi/arch", None, [random_bytes(MiB, seed=6)], arch="arm64")
        index = await push_upstream_index(base, "multi/arch", "v1", [amd, arm])
        repository = f"127.0.0.1:{port}/multi/arch"
        registry = f'{{name = "127.0.0.1:{port}", scheme = "http"}}'
        async with cluster(nursery, tmp_path, registry) as (_herd, agents):
            assert await pull(registry_url(agents[0]), repository, amd.digest) == expect(amd)
            async with httpx.AsyncClient(base_url=registry_url(agents[0]), timeout=60) as client:
                tagged = await client.get(f"/v2/{repository}/manifests/v1", headers={"Accept": ACCEPT})
                assert tagged.content == index.manifest
    # Upstream stopped: the tag still names the index, and its children are there by digest.
    async with cluster(nursery, tmp_path, registry) as (_herd, agents):
        async with httpx.AsyncClient(base_url=registry_url(agents[0]), timeout=60) as client:
            tagged = await client.get(f"/v2/{repository}/manifests/v1", headers={"Accept": ACCEPT})
            assert tagged.status_code == 200 and tagged.content == index.manifest
            child = await client.get(f"/v2/{repository}/manifests/{arm.digest}", headers={"Accept": ACCEPT})
            assert child.status_code == 200 and child.content == arm.manifest
        # The arm64 layers were never pulled while the upstream ran: now they cannot be had.
        async with httpx.AsyncClient(base_url=registry_url(agents[0]), timeout=60) as client:
            layer = next(iter(arm.blobs))
            response = await client.get(f"/v2/{repository}/blobs/{layer}")
            # The origin's answer for a stopped upstream reaches the client through the tracker
            # and the agent unchanged, naming the upstream.
            assert_error(response, 503, "UPSTREAM_UNAVAILABLE")
            assert f"127.0.0.1:{port}" in response.json()["errors"][0]["message"], response.text
        assert await pull(registry_url(agents[0]), repository, amd.digest) == expect(amd)


def _tls_files(tmp_path: Path, *, client: bool) -> tuple[Path, Path, Path, Path, Path]:
    """A CA, the upstream's certificate for 127.0.0.1, and a client certificate (CA, cert, key,
    client cert, client key)."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = [tmp_path / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")]
    ca.cert_pem.write_to_path(paths[0])
    server.private_key_and_cert_chain_pem.write_to_path(paths[1])
    server.private_key_pem.write_to_path(paths[2])
    if client:
        issued = ca.issue_cert("swarmreg-herd")
        issued.cert_chain_pems[0].write_to_path(paths[3])
        issued.private_key_pem.write_to_path(paths[4])
    return paths[0], paths[1], paths[2], paths[3], paths[4]


@pytest.mark.parametrize("kind", ["htpasswd", "tls", "mtls"])
async def test_pull_through_an_authenticated_or_tls_upstream(nursery, tmp_path: Path, kind: str):
    ca, cert, key, client_cert, client_key = _tls_files(tmp_path, client=kind == "mtls")
    options: dict[str, str] = {}
    users = None
    if kind == "htpasswd":
        users = {"puller": PASSWORD}
    else:
        options = {"cert": str(cert), "key": str(key)}
        if kind == "mtls":
            options["client_ca"] = str(ca)
    with docker_registry(tmp_path, users=users, **options) as port:
        if kind == "htpasswd":
            base, verify, auth = f"http://127.0.0.1:{port}", True, RegistryAuth("puller", PASSWORD)
            registry = (f'{{name = "127.0.0.1:{port}", scheme = "http", '
                        f'auth = {{user = "puller", password = "{PASSWORD}"}}}}')
        else:
            base, auth = f"https://127.0.0.1:{port}", None
            verify = ssl.create_default_context(cafile=str(ca))
            tls = f'ca = "{ca}"'
            if kind == "mtls":
                verify.load_cert_chain(client_cert, client_key)
                tls += f', cert = "{client_cert}", key = "{client_key}"'
            registry = f'{{name = "127.0.0.1:{port}", tls = {{{tls}}}}}'
        pushed = await push_upstream_image(base, "team/app", "v1", [random_bytes(MiB, seed=7)],
                                           auth=auth, verify=verify)
        async with cluster(nursery, tmp_path, registry) as (_herd, agents):
            assert await pull(registry_url(agents[0]), f"127.0.0.1:{port}/team/app", "v1") == expect(pushed)


async def test_pull_through_our_own_proxy_in_token_mode(nursery, tmp_path: Path):
    (tmp_path / "upstream").mkdir()
    upstream = await start_token_proxy(nursery, tmp_path / "upstream", token_ttl=60.0)
    name = upstream.removeprefix("http://")
    async with httpx.AsyncClient(base_url=upstream, auth=RegistryAuth("alice", PASSWORD), timeout=60) as client:
        digest, manifest = await push_image(client, "team/app", "v1", [random_bytes(MiB, seed=8)])
    registry = f'{{name = "{name}", scheme = "http", auth = {{user = "alice", password = "{PASSWORD}"}}}}'
    async with cluster(nursery, tmp_path, registry) as (_herd, agents):
        async with httpx.AsyncClient(base_url=registry_url(agents[0]), timeout=60) as client:
            response = await client.get(f"/v2/{name}/team/app/manifests/v1", headers={"Accept": ACCEPT})
            assert response.status_code == 200, response.text
            assert response.content == manifest and response.headers["Docker-Content-Digest"] == digest
            for layer in response.json()["layers"]:
                blob = await client.get(f"/v2/{name}/team/app/blobs/{layer['digest']}")
                assert blob.status_code == 200 and len(blob.content) == layer["size"]
