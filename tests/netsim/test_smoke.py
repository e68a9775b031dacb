"""netsim's smoke scenario runs in the suite: real daemons, every agent's content checked by digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netsim.__main__ import main
from netsim.scenario import Arrivals, Links, Scenario, load_scenario
from swarmreg.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "smoke.json"
    assert main(["run", str(ROOT / "configs/netsim/smoke.toml"), "--json", str(out),
                 "--workdir", str(tmp_path / "work")]) == 0
    figures = json.loads(out.read_text())
    assert figures["completed"] == 5 and figures["failed"] == []
    # T* = max(F/u_origin, F/d_agent, N*F/(u_origin + N*u_agent)) = 5 * 8 / (8 + 5 * 4) s
    assert figures["lower_bound_s"] == pytest.approx(40 / 28)
    assert 0 < figures["p50_s"] <= figures["p90_s"] <= figures["max_s"]
    assert figures["origin_egress_x"] >= 1.0, "the origin sent the blob at least once"
    assert figures["samples"], "bytes over time were sampled"
    printed = capsys.readouterr().out
    assert "lower bound T*" in printed and "p99 completion" in printed and "loopback" in printed
    # Every node was stopped: nothing is left listening from the run.
    assert not any((tmp_path / "work").glob("*.pid"))


def test_lower_bound_and_arrivals() -> None:
    scenario = Scenario("x", agents=10, blob_size=100, links=Links(origin_up=10, agent_up=5, agent_down=50))
    assert scenario.lower_bound() == max(100 / 10, 100 / 50, 10 * 100 / (10 + 10 * 5))
    assert Arrivals("staggered", 2.0).start_times(3) == [0.0, 2.0, 4.0]
    assert Arrivals("waves", 5.0, wave_size=2).start_times(5) == [0.0, 0.0, 5.0, 5.0, 10.0]


def test_every_shipped_scenario_loads_and_bad_ones_are_refused(tmp_path: Path) -> None:
    for path in (ROOT / "configs/netsim").glob("*.toml"):
        assert load_scenario(path).name == path.stem
    bad = tmp_path / "bad.toml"
    for text, named in (('agents = 5\nblob_size = "lots"\n[links]\norigin_upp = 1\n', ["blob_size", "links.origin_upp"]),
                        ("agents = 0\n", ["agents"])):
        bad.write_text(text)
        with pytest.raises(ConfigError) as refused:
            load_scenario(bad)
        assert all(name in str(refused.value) for name in named), refused.value
