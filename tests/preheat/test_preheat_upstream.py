"""Preheat of upstream images (issue 12, point 5) against a real docker-registry: the herd asks
the upstream once for every blob, agents hold the image before any pull, and it is served with
the upstream gone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.preheat.helpers import HERD, preheat
from tests.pullthrough.images import push_upstream_image, push_upstream_index
from tests.pullthrough.test_end_to_end import pull
from tests.upstream.registries import docker_registry, upstream_blob_gets

pytestmark = pytest.mark.slow


def hexes(digests) -> set[str]:
    return {digest.removeprefix("sha256:") for digest in digests}


async def test_a_preheat_of_upstream_images_fetches_each_blob_once_and_fills_agents(nursery: trio.Nursery,
                                                                                 tmp_path: Path):
    with docker_registry(tmp_path) as port:
        base, upstream = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
        app = await push_upstream_image(base, "team/app", "v1", [random_bytes(2 << 20, seed=1), b"small layer"])
        amd = await push_upstream_image(base, "multi/arch", None, [random_bytes(300_000, seed=2)], arch="amd64")
        arm = await push_upstream_image(base, "multi/arch", None, [random_bytes(300_000, seed=3)], arch="arm64")
        index = await push_upstream_index(base, "multi/arch", "v2", [amd, arm])
        bare = await push_upstream_image(base, "team/bare", "v1", [b"only upstream"])
        herd = await start_daemon(nursery, make_config(
            tmp_path / "herd", f'registries=[{{name = "{upstream}", scheme = "http"}}]',
            f'default_registry="{upstream}"'), HERD)
        roles = herd.ready["roles"]
        agents = [await start_daemon(nursery, make_config(
            tmp_path / f"agent{i}", f"agent.tracker={roles['tracker']['ws']}",
            f"agent.index={roles['index']['http']}"), ["agent"]) for i in range(2)]
        async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
            with trio.fail_after(30):  # both agents registered with the tracker
                while True:
                    doc = await preheat(proxy, [f"{upstream}/team/bare:v1"], agents="all")
                    if doc["agents"]["asked"] == 2:
                        break
                    await trio.sleep(0.2)
            doc = await preheat(proxy, [f"{upstream}/team/app:v1", f"{upstream}/multi/arch:v2", "team/bare:v1"],
                                platform="linux/arm64", agents=2)
        assert doc["status"] == "done", doc
        assert [r["repository"] for r in doc["results"]] == [
            f"{upstream}/team/app", f"{upstream}/multi/arch", f"{upstream}/team/bare"]
        arm_layers = set(arm.blobs) - set(amd.blobs)
        wanted = {app.digest, *app.blobs, index.digest, amd.digest, arm.digest, *arm.blobs, bare.digest, *bare.blobs}
        held = set(blob_files(tmp_path / "herd"))
        assert hexes(wanted) <= held
        assert not hexes(set(amd.blobs) - set(arm.blobs)) & held  # another platform's layers: not fetched
        # The upstream served each blob once for the whole cluster.
        gets = upstream_blob_gets(tmp_path / "docker-registry.log")
        assert all(gets.get(d) == 1 for d in [*app.blobs, *arm_layers, *bare.blobs]), gets
        for agent in agents:
            assert hexes([*app.blobs, *arm.blobs, app.digest]) <= set(blob_files(Path(agent.config.data_dir)))
    # The upstream is gone: an agent serves the preheated image by its unchanged name.
    got = await pull(f"http://{agents[0].ready['roles']['agent']['registry']}", f"{upstream}/team/app", "v1")
    assert got == {app.digest: app.manifest, **app.blobs}
