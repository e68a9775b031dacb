"""Real clients pull upstream images through the swarm (issue 12, points 2, 6 and 7): a docker-registry
holds an image no one here pushed to swarmreg; the devcluster-shaped cluster pulls through to it.

containerd pulls it under its unchanged name with the hosts.toml of ``swarmreg containerd-config``
(asking the agent with ``?ns=``), then again with the upstream stopped; the upstream's access log
shows every blob served once. skopeo pulls it through a ``registries.conf`` mirror entry (no
``ns``: ``default_registry`` names the upstream). Daemon logs are in the test's tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from swarmreg.cli import main
from tests.upstream.registries import docker_registry, upstream_blob_gets

from .clients import Containerd, Skopeo
from .layout import build_oci_layout
from .test_swarmreg import Cluster, MiB, Spawn, content_digests, push_layout
from .tools import hostport

pytestmark = pytest.mark.slow


async def start_pulling_through(spawn: Spawn, upstream: str) -> Cluster:
    """A herd and two agents, as ``scripts/devcluster --upstream http://<upstream>`` sets them."""
    registries = f'registries=[{{name = "{upstream}", scheme = "http"}}]'
    default = f'default_registry="{upstream}"'
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], "store.fsync=false", registries, default)
    agents = [await spawn(name, ["agent"], "store.fsync=false", default,
                          f"agent.tracker={herd.address('tracker', 'ws')}",
                          f"agent.index={herd.address('index', 'http')}")
              for name in ("agent-one", "agent-two")]
    return Cluster(herd, tuple(agents))


async def test_ctr_pulls_an_upstream_image_through_the_swarm_then_with_the_upstream_stopped(
        ctr: Containerd, skopeo: Skopeo, spawn: Spawn, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = await trio.to_thread.run_sync(build_oci_layout, layout, [6 * MiB, 2 * MiB, 100])
    upstream_log = tmp_path / "docker-registry.log"
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        assert await push_layout(skopeo, layout, f"http://{upstream}", "team/app:v1", tmp_path) == image.manifest.digest
        cluster = await start_pulling_through(spawn, upstream)
        hosts_dirs = []
        for n, agent in enumerate(cluster.agents):
            hosts_dirs.append(tmp_path / f"certs.d-{n}")
            assert main(["containerd-config", "--agent", cluster.registry(agent), "--dir", str(hosts_dirs[-1]),
                         "--registry", upstream]) == 0
        ref = f"{upstream}/team/app:v1"
        with trio.fail_after(180):
            await ctr("image", "pull", "--hosts-dir", str(hosts_dirs[0]), "--snapshotter", "native", ref)
        assert await ctr.image_target(ref) == image.manifest.digest
        assert await content_digests(ctr) == set(image.blobs)
        agent_log = (tmp_path / "agent-one.log").read_text()
        for digest in image.blobs:  # every request went to the agent, naming the upstream
            assert re.search(rf'"GET /v2/team/app/(manifests|blobs)/{digest}\?ns={re.escape(upstream)} .*" 200 ',
                             agent_log.replace("%3A", ":")), digest
        layer_blobs = {image.config.digest, *(layer.digest for layer in image.layers)}
        assert upstream_blob_gets(upstream_log) == dict.fromkeys(layer_blobs, 1)
    # The upstream is stopped. containerd forgets the image and pulls it again, from the other agent.
    await ctr("image", "rm", ref)
    await ctr("content", "prune", "references", check=False)
    for digest in await content_digests(ctr):
        await ctr("content", "rm", digest, check=False)
    with trio.fail_after(180):
        await ctr("image", "pull", "--hosts-dir", str(hosts_dirs[1]), "--snapshotter", "native", ref)
    assert await ctr.image_target(ref) == image.manifest.digest
    assert await content_digests(ctr) == set(image.blobs)
    assert upstream_blob_gets(upstream_log) == dict.fromkeys(layer_blobs, 1)  # nothing more was asked of it


async def test_skopeo_pulls_through_a_registries_conf_mirror(skopeo: Skopeo, spawn: Spawn, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = await trio.to_thread.run_sync(build_oci_layout, layout, [3 * MiB, 100])
    with docker_registry(tmp_path) as port:
        upstream = f"127.0.0.1:{port}"
        await push_layout(skopeo, layout, f"http://{upstream}", "team/app:v1", tmp_path)
        cluster = await start_pulling_through(spawn, upstream)
        agent = hostport(cluster.registry(cluster.agents[0]))
        conf = tmp_path / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{upstream}"\ninsecure = true\n'
                        f'[[registry.mirror]]\nlocation = "{agent}"\ninsecure = true\n')
        out = tmp_path / "out"
        with trio.fail_after(120):
            await skopeo("--registries-conf", str(conf), "copy", "--src-tls-verify=false",
                         f"docker://{upstream}/team/app:v1", f"oci:{out}:v1")
        assert image.manifest.digest in (out / "index.json").read_text()
        agent_log = (tmp_path / "agent-one.log").read_text()
        assert re.search(rf'"GET /v2/team/app/blobs/{image.layers[0].digest} .*" 200 ', agent_log)
        # The mirror served it: skopeo never read a layer from the upstream itself, the herd once.
        assert upstream_blob_gets(tmp_path / "docker-registry.log").get(image.layers[0].digest) == 1
