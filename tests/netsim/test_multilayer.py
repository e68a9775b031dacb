"""netsim's image scenarios: a multi-layer image pushed to the herd's proxy and pulled through
every agent's registry API as docker pulls it, all layers at once, each checked by digest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from netsim import pulls
from netsim.__main__ import main
from netsim.cluster import HERD, joins
from netsim.registry_client import push_new_image
from netsim.runner import MILESTONES, pinned, run_scenario
from netsim.scenario import Fault, ImageSpec, load_scenario
from swarmreg.config import ConfigError
from tests.netsim.helpers import leftovers, needs_netns
from tests.netsim.test_smoke import ROOT

MiB = 1 << 20
SMALL = ROOT / "configs/netsim/multilayer-small.toml"


@pytest.mark.parametrize("mode", [pytest.param("netns", marks=needs_netns), "loopback"])
def test_the_small_image_scenario_runs_and_reports(mode: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "image.json"
    assert main(["run", str(SMALL), "--mode", mode, "--json", str(out), "--workdir", str(tmp_path / "work")]) == 0
    figures = json.loads(out.read_text())
    assert figures["mode"] == mode and figures["completed"] == 4 and figures["failed"] == []
    image = figures["image"]
    assert image["size"] == figures["blob_size"] == 10 * MiB
    assert [layer["size"] for layer in image["layers"]] == [MiB, 2 * MiB, 3 * MiB, 4 * MiB]
    # T* with F = every layer's bytes: max(10/8, 10/16, 4 * 10 / (8 + 4 * 4)) s
    assert figures["lower_bound_s"] == pytest.approx(40 / 24)
    for layer in image["layers"]:
        assert 0 < layer["p50_s"] <= layer["max_s"] <= figures["max_s"]
    # The 1 MiB layer comes inline from the tracker (tracker.inline_max): no torrent, no milestones.
    assert [set(layer["milestones_p50_s"]) for layer in image["layers"]] == [set(), *[set(MILESTONES)] * 3]
    assert figures["milestones_p50_s"] == image["layers"][-1]["milestones_p50_s"], "the largest layer's"
    # The origin's swarm sent each torrent's pieces at least once (the inline layer went by HTTP).
    assert figures["origin_egress_x"] >= 0.9
    assert figures["cpu"]["daemons_s"] > 0 and 0 < figures["cpu"]["machine_busy"] <= 1
    printed = capsys.readouterr().out
    assert "image of 4 layers (1, 2, 3, 4 = 10 MiB)" in printed and "(of the image)" in printed
    assert "layer 4 MiB GET" in printed and "torrent of the largest layer" in printed
    assert leftovers(os.getpid()) == []


def test_an_image_pull_cut_by_restarts_is_tried_again(tmp_path: Path) -> None:
    # agent-1 dies mid-pull (no agent gets 10 MiB in 0.3 s at 16 MiB/s), then the herd does: the
    # restarted herd's index and proxy are where they were, and every pull completes.
    small = load_scenario(SMALL)
    scenario = attrs.evolve(small, faults=(Fault(0.3, "agent-1"), Fault(0.5, "origin")))
    figures = trio.run(run_scenario, scenario, tmp_path, "auto")
    assert figures["completed"] == 4 and figures["failed"] == []
    assert figures["retries"] >= 1, "agent-1's pull was cut and tried again"
    assert leftovers(os.getpid()) == []


def test_pinned_keeps_a_restarted_herd_s_index_and_proxy_where_they_were() -> None:
    ready = {"roles": {"origin": {"http": "10.1.0.2:3000"}, "tracker": {"ws": "10.1.0.2:3001"},
                       "index": {"http": "10.1.0.2:3002"}, "proxy": {"http": "10.1.0.2:3003"}},
             "peer": "10.1.0.2:3004"}
    assert pinned(ready) == ("origin.listen=10.1.0.2:3000", "tracker.listen=10.1.0.2:3001",
                             "index.listen=10.1.0.2:3002", "proxy.listen=10.1.0.2:3003",
                             "swarm.listen=10.1.0.2:3004")


def test_the_shipped_image_scenario_and_its_lower_bound() -> None:
    scenario = load_scenario(ROOT / "configs/netsim/multilayer.toml")
    assert scenario.image == ImageSpec((8 * MiB, 16 * MiB, 32 * MiB, 64 * MiB)) and scenario.agents == 30
    assert scenario.size == 120 * MiB
    assert scenario.lower_bound() == pytest.approx(30 * 120 / (5 + 30 * 1.25))


@pytest.mark.parametrize(("text", "message"), [
    ('blob_size = "8MiB"\n[image]\nlayers = ["1MiB"]\n', "image: a scenario pulls one blob (blob_size) or an image"),
    ('[image]\nlayers = "8MiB"\n', "image.layers: expected a list of sizes"),
    ("[image]\nlayers = []\n", "image.layers: must name from 1 to 128 layer sizes, not 0"),
    ("[image]\nlayers = [" + ", ".join(["1"] * 129) + "]\n", "image.layers: must name from 1 to 128 layer sizes"),
    ('[image]\nlayers = ["1MiB", 0]\n', "image.layers: must be sizes above 0"),
    ('[image]\nlayers = ["1MiB", "lots"]\n', "image.layers[1]: expected a size in bytes"),
    ('[image]\nlayer = ["1MiB"]\n', "image.layer: unknown key"),
    ("[image]\n", "image.layers: required key missing"),
    ('image = "app:v1"\n', "image: expected a table"),
])
def test_bad_image_input_is_refused_by_key(text: str, message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("agents = 2\n" + text)
    with pytest.raises(ConfigError) as refused:
        load_scenario(bad)
    assert message in str(refused.value), refused.value


async def test_an_image_pull_attempt_is_checked_and_its_failures_told_apart(spawn: Any, tmp_path: Path) -> None:
    herd = await spawn("herd", list(HERD))
    agent = await spawn("agent", ["agent"], *joins(herd))
    image = await push_new_image(herd.url("proxy"), tmp_path, [MiB + 1, 2 * MiB, 2 * MiB], "netsim/app", "v1",
                                 timeout=60)
    registry = agent.url("agent", "registry")
    assert set(await pulls.image(registry, image, timeout=60)) == {"1 MiB", "2 MiB"}, "each layer size's GET"
    # Another manifest under the tag than the one pushed: a wrong answer, not worth a retry.
    with pytest.raises(pulls.WrongContent, match="wrong manifest digest"):
        await pulls.image(registry, attrs.evolve(image, manifest_digest="sha256:" + "0" * 64), timeout=60)
    # A tag nobody pushed: refused (404), so a client would try again later.
    with pytest.raises(pulls.Cut, match="HTTP 404"):
        await pulls.image(registry, attrs.evolve(image, tag="v2"), timeout=60)
    agent.kill()
    await agent.wait()
    with pytest.raises(pulls.Cut, match="ConnectError"):
        await pulls.image(registry, image, timeout=60)
