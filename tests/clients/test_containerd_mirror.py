"""The real containerd pulls through a swarmreg agent with the hosts.toml that
``swarmreg containerd-config`` writes (issue 12, the transparent mirror), and skopeo reads
upstream images through an agent in the in-path form and by bare name with ``default_registry``.

The upstream is Debian's docker-registry, holding the image (pushed with skopeo). The herd holds
it under the upstream's name, ``<registry host:port>/team/app``, recorded there the way the herd
records what it pulls through (tests/registry/helpers.py). ``ctr image pull --hosts-dir DIR``
under the upstream's own name asks the agent (the mirror) first, with ``?ns=<host:port>`` on
every request, which the agent's access log shows; the upstream is never asked. Daemon logs are
in the test's tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from swarmreg.cli import main
from tests.registry.helpers import seed_layout

from .clients import Containerd, Skopeo
from .layout import MANIFEST, Image, build_oci_layout
from .test_swarmreg import Cluster, MiB, Spawn, content_digests, push_layout, start_cluster
from .tools import hostport

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster(spawn: Spawn) -> Cluster:
    return await start_cluster(spawn)


async def seed_upstream_image(cluster: Cluster, repository: str, tag: str, layout: Path, image: Image) -> None:
    """``image`` of ``layout`` into the herd under ``repository``, as pull-through records it."""
    herd = (cluster.herd.address("origin", "http"), cluster.herd.address("index", "http"))
    await seed_layout(herd, repository, tag, layout, image.manifest.digest,
                      [image.config.digest, *(layer.digest for layer in image.layers)], MANIFEST)


async def test_ctr_pulls_through_the_agent_under_the_upstream_name(
        ctr: Containerd, skopeo: Skopeo, cluster: Cluster, reference_registry: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = await trio.to_thread.run_sync(build_oci_layout, layout, [4 * MiB, 100])
    assert await push_layout(skopeo, layout, reference_registry, "team/app:v1", tmp_path) == image.manifest.digest
    upstream = hostport(reference_registry)
    await seed_upstream_image(cluster, f"{upstream}/team/app", "v1", layout, image)
    agent = cluster.agents[0]
    hosts_dir = tmp_path / "certs.d"
    assert main(["containerd-config", "--agent", cluster.registry(agent), "--dir", str(hosts_dir),
                 "--registry", upstream]) == 0
    ref = f"{upstream}/team/app:v1"
    upstream_log = tmp_path / "docker-registry.log"
    pushed = len(upstream_log.read_bytes())
    with trio.fail_after(120):
        # No --plain-http: the schemes come from hosts.toml (the agent's URL, server = http://...).
        await ctr("image", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", "native", ref)
    assert await ctr.image_target(ref) == image.manifest.digest
    assert await content_digests(ctr) == set(image.blobs)
    log = (tmp_path / "agent-one.log").read_text()
    ns = re.escape(f"?ns={quote(upstream, safe='')} ")  # containerd names the upstream on each request
    assert re.search(rf'"HEAD /v2/team/app/manifests/v1{ns}.*" 200 ', log), log[-4000:]
    for digest in image.blobs:  # the manifest, the config and the layers, all from the agent
        assert re.search(rf'"GET /v2/team/app/(manifests|blobs)/{digest}{ns}.*" 200 ', log), digest
    # containerd never had to fall back to the upstream itself.
    assert "/v2/team/app" not in upstream_log.read_bytes()[pushed:].decode(errors="replace")


async def test_skopeo_reads_upstream_images_through_an_agent(skopeo: Skopeo, spawn: Spawn, tmp_path: Path) -> None:
    """``docker://<agent>/docker.io/library/app`` (the in-path form) and, with
    ``default_registry = "docker.io"``, ``docker://<agent>/app``: Docker Hub's image, cached."""
    cluster = await start_cluster(spawn, 'default_registry="docker.io"', "air_gapped=true")
    herd = cluster.herd
    agent = await spawn("agent-hub", ["agent"], "store.fsync=false", 'default_registry="docker.io"',
                        "air_gapped=true", f"agent.tracker={herd.address('tracker', 'ws')}",
                        f"agent.index={herd.address('index', 'http')}")
    layout = tmp_path / "layout"
    image = await trio.to_thread.run_sync(build_oci_layout, layout, [2 * MiB, 100])
    await seed_upstream_image(cluster, "docker.io/library/app", "v1", layout, image)
    registry = f"http://{agent.address('agent', 'registry')}"
    for n, repo_tag in enumerate(["docker.io/library/app:v1", "docker.io/app:v1", "app:v1", "library/app:v1"]):
        out = tmp_path / f"out{n}"
        with trio.fail_after(120):
            await skopeo.pull(registry, repo_tag, out, ref="v1")
        index = (out / "index.json").read_text()
        assert image.manifest.digest in index, (repo_tag, index)
        assert {p.name for p in (out / "blobs" / "sha256").iterdir()} == {
            d.removeprefix("sha256:") for d in image.blobs}, repo_tag
    # The agent without default_registry has no bare "app": skopeo fails, the agent serves on.
    failed = await skopeo("inspect", "--tls-verify=false", f"docker://{hostport(cluster.registry(cluster.agents[0]))}"
                          "/app:v1", check=False)
    assert failed.returncode != 0
    assert (await skopeo.inspect(cluster.registry(cluster.agents[0]), "docker.io/library/app:v1",
                                 raw=True))["config"]["digest"] == image.config.digest
