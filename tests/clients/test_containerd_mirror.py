"""The real containerd pulls through a swarmreg agent with the hosts.toml that
``swarmreg containerd-config`` writes (issue 12, the transparent mirror).

The image is pushed to the proxy and pulled by ``ctr image pull --hosts-dir DIR`` under the
proxy's own name: containerd asks the agent (the mirror) first, with ``?ns=<proxy host:port>``
on every request, which the agent's access log shows. Daemon logs are in the test's tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from swarmreg.cli import main

from .clients import Containerd, Skopeo
from .layout import build_oci_layout
from .test_swarmreg import Cluster, MiB, Spawn, content_digests, push_layout, start_cluster
from .tools import hostport

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster(spawn: Spawn) -> Cluster:
    return await start_cluster(spawn)


async def test_ctr_pulls_through_the_agent_under_the_upstream_name(
        ctr: Containerd, skopeo: Skopeo, cluster: Cluster, tmp_path: Path) -> None:
    image = await trio.to_thread.run_sync(build_oci_layout, tmp_path / "layout", [4 * MiB, 100])
    assert await push_layout(skopeo, tmp_path / "layout", cluster.proxy, "team/app:v1",
                             tmp_path) == image.manifest.digest
    upstream = hostport(cluster.proxy)
    agent = cluster.agents[0]
    hosts_dir = tmp_path / "certs.d"
    assert main(["containerd-config", "--agent", cluster.registry(agent), "--dir", str(hosts_dir),
                 "--registry", upstream]) == 0
    ref = f"{upstream}/team/app:v1"
    herd_log = tmp_path / "herd.log"
    pushed = len(herd_log.read_bytes())
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
    assert "/v2/team/app" not in herd_log.read_bytes()[pushed:].decode()
