"""POST /preheat on the proxy (issue 12, point 5): the origin fetches and seeds every blob of the
images named, a platform narrows a multi-arch index to one child's layers, agents fetch ahead."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from swarmreg.config import Address
from swarmreg.tracker.client import list_agents
from tests.conftest import RunningDaemon, blob_files, make_config, random_bytes, start_daemon
from tests.preheat.helpers import forget_seeds, preheat, push_multiarch, push_test_image, seeded, start_herd

REPO = "team/app"
MULTI = "team/multi"


async def test_a_preheat_makes_the_origin_seed_every_blob_of_pushed_images(nursery: trio.Nursery, tmp_path: Path):
    data_dir = tmp_path / "herd"
    herd = await start_herd(nursery, data_dir)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, REPO, "v1", [random_bytes(300_000, seed=1), random_bytes(5000, seed=2)])
        index, children = await push_multiarch(proxy, MULTI, "v2", {
            "amd64": [random_bytes(70_000, seed=3)], "arm64": [random_bytes(80_000, seed=4)]})
    await herd.stop()
    forget_seeds(data_dir)  # started again, the origin holds every blob but seeds none
    herd = await start_herd(nursery, data_dir)
    assert not (await seeded(herd.url("origin"))) & (set(image.blobs) | set(index.blobs))
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        doc = await preheat(proxy, [image.reference, index.reference, f"{REPO}@{image.digest}"])
    assert doc["status"] == "done", doc
    assert doc["images"] == {"total": 3, "done": 3, "failed": 0}
    every = set(image.blobs) | set(index.blobs)
    assert doc["blobs"] == {"total": len(every), "done": len(every), "failed": 0}
    assert doc["bytes"]["total"] == doc["bytes"]["done"] == sum(image.blobs.values()) + sum(index.blobs.values())
    assert doc["errors"] == [] and doc["platform"] is None
    assert [(r["image"], r["status"], r["digest"]) for r in doc["results"]] == [
        (image.reference, "done", image.digest), (index.reference, "done", index.digest),
        (f"{REPO}@{image.digest}", "done", image.digest)]
    assert every <= await seeded(herd.url("origin"))


async def test_a_platform_narrows_an_index_to_its_matching_child(nursery: trio.Nursery, tmp_path: Path):
    data_dir = tmp_path / "herd"
    herd = await start_herd(nursery, data_dir)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        index, children = await push_multiarch(proxy, MULTI, "v2", {
            "amd64": [random_bytes(70_000, seed=3)], "arm64": [random_bytes(80_000, seed=4)]})
    await herd.stop()
    forget_seeds(data_dir)
    herd = await start_herd(nursery, data_dir)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        doc = await preheat(proxy, [index.reference], platform="linux/arm64")
        assert doc["status"] == "done" and doc["platform"] == "linux/arm64", doc
        now = await seeded(herd.url("origin"))
        # The index stays whole (it and every child manifest), layers only of the arm64 child.
        assert {index.digest, children["amd64"].digest} | set(children["arm64"].blobs) <= now
        assert not (set(children["amd64"].blobs) - {children["amd64"].digest}) & now
        missing = await preheat(proxy, [index.reference], platform="linux/s390x")
        assert missing["status"] == "failed"
        assert "no manifest for platform linux/s390x" in missing["results"][0]["error"]


async def start_agent(nursery: trio.Nursery, herd: RunningDaemon, data_dir: Path, *overrides: str) -> RunningDaemon:
    roles = herd.ready["roles"]
    return await start_daemon(nursery, make_config(
        data_dir, "store.fsync=false", f"agent.tracker={roles['tracker']['ws']}",
        f"agent.index={roles['index']['http']}", *overrides), ["agent"])


async def wait_for_agents(herd: RunningDaemon, count: int) -> None:
    """Until the tracker lists ``count`` agents (each registers its blob API once connected)."""
    with trio.fail_after(30):
        while len(await list_agents(Address.parse(herd.ready["roles"]["tracker"]["ws"]),
                                    secret=herd.config.cluster.secret)) < count:
            await trio.sleep(0.1)


async def test_agents_fetch_every_blob_before_any_pull(nursery: trio.Nursery, tmp_path: Path):
    herd = await start_herd(nursery, tmp_path / "herd")
    agents = [await start_agent(nursery, herd, tmp_path / f"agent{i}") for i in range(3)]
    await wait_for_agents(herd, 3)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, REPO, "v1", [random_bytes(3 << 20, seed=1), random_bytes(5000, seed=2)])
        doc = await preheat(proxy, [image.reference], agents=2)
    assert doc["status"] == "done", doc
    blobs = len(image.blobs)
    assert doc["agents"] == {"requested": 2, "asked": 2, "blobs": {"total": 2 * blobs, "done": 2 * blobs, "failed": 0}}
    wanted = {digest.removeprefix("sha256:") for digest in image.blobs}
    holding = [agent for agent in agents if wanted <= set(blob_files(Path(agent.config.data_dir)))]
    assert len(holding) == 2
    idle = next(agent for agent in agents if agent not in holding)
    assert not set(blob_files(Path(idle.config.data_dir))) & wanted
    # "all": the third agent too; those that hold the blobs answer at once.
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        doc = await preheat(proxy, [image.reference], agents="all")
    assert doc["status"] == "done" and doc["agents"]["asked"] == 3, doc
    assert wanted <= set(blob_files(Path(idle.config.data_dir)))
