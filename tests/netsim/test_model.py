"""The flow-level model (netsim/model.py): its bounds, its directions, its calibration and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from netsim import model_calibration
from netsim.__main__ import main
from netsim.model import Constants, Policy, Swarm, figures, policy_from_settings, simulate, swarm_of
from netsim.scenario import load_scenario
from swarmreg.config import ConfigError

MiB = 1 << 20
CONFIGS = Path(__file__).parents[2] / "configs" / "netsim"
EXACT = Policy(payload=1.0)  # caps as given, so that T* is the bound to compare with


def bounds(swarm: Swarm) -> tuple[float, float]:
    """What no agent beats (every byte from the origins once, and through its own link) and what
    the last one cannot beat (T*: every agent's bytes through every uplink)."""
    size = sum(swarm.layer_sizes)
    origins = swarm.origin_up * swarm.origins
    anyone = max(size / origins, size / swarm.agent_down)
    return anyone, max(anyone, swarm.agents * size / (origins + swarm.agents * swarm.agent_up))


@pytest.mark.parametrize("swarm", [
    Swarm(agents=10, layer_sizes=(8 * MiB,), origin_up=8 * MiB, agent_up=4 * MiB, agent_down=16 * MiB),
    Swarm(agents=30, layer_sizes=(32 * MiB,), origin_up=5 * MiB, agent_up=1.25 * MiB, agent_down=5 * MiB),
    Swarm(agents=12, layer_sizes=(3 * MiB, 3 * MiB, 3 * MiB), origins=2, origin_up=2 * MiB, agent_up=3 * MiB,
          agent_down=6 * MiB),
    Swarm(agents=6, layer_sizes=(16 * MiB,), origin_up=40 * MiB, agent_up=20 * MiB, agent_down=10 * MiB),
    Swarm(agents=8, layer_sizes=(1 * MiB, 8 * MiB, 20 * MiB), origin_up=6 * MiB, agent_up=2 * MiB, agent_down=8 * MiB),
])
def test_the_model_never_beats_the_lower_bound(swarm: Swarm) -> None:
    anyone, last = bounds(swarm)
    for policy in (EXACT, attrs.evolve(EXACT, unchoke_slots=2, seed_upload_slots=0)):
        completion = simulate(swarm, policy).completion_s
        assert completion[0] >= anyone * (1 - 1e-9) and completion[-1] >= last * (1 - 1e-9)


@pytest.mark.parametrize(("origin_up", "agent_down"), [(4 * MiB, 16 * MiB), (16 * MiB, 4 * MiB)])
def test_one_agent_from_one_origin_takes_size_over_the_narrower_link(origin_up: int, agent_down: int) -> None:
    swarm = Swarm(agents=1, layer_sizes=(8 * MiB,), origin_up=origin_up, agent_up=MiB, agent_down=agent_down)
    result = simulate(swarm, EXACT)
    expected = swarm.layer_sizes[0] / min(origin_up, agent_down)
    assert result.completion_s[0] == pytest.approx(expected, rel=0.01)
    assert result.origin_bytes == pytest.approx(swarm.layer_sizes[0])


def test_layers_of_different_sizes_share_one_agents_link() -> None:
    # Three torrents of different piece lengths (64 KiB, 256 KiB, 1 MiB), one origin slot each.
    swarm = Swarm(agents=1, layer_sizes=(3 * MiB, 40 * MiB, 100 * MiB), origin_up=64 * MiB, agent_up=MiB,
                  agent_down=16 * MiB)
    result = simulate(swarm, EXACT)
    assert result.completion_s[0] == pytest.approx(143 / 16, rel=0.01)
    assert result.origin_bytes == pytest.approx(143 * MiB) and result.piece_length == 64 << 10


def test_payload_share_of_the_link_slows_a_pull_by_that_share() -> None:
    swarm = Swarm(agents=1, layer_sizes=(8 * MiB,), origin_up=4 * MiB, agent_up=MiB, agent_down=16 * MiB)
    assert simulate(swarm, Policy(payload=0.5)).completion_s[0] == pytest.approx(4.0, rel=0.01)


SWARM30 = Swarm(agents=30, layer_sizes=(32 * MiB,), origin_up=5 * MiB, agent_up=1.25 * MiB, agent_down=5 * MiB)


def test_fewer_unchoke_slots_shorten_the_hop_and_the_median() -> None:
    # docs/benchmarks.md: unchoke slots 2 instead of 8 took swarm30's p50 from 1.35-1.39x to 1.22x.
    medians = [figures(simulate(SWARM30, Policy(unchoke_slots=k)), 1.0)["p50_s"] for k in (2, 8)]
    assert medians[0] < medians[1]


def test_a_slower_origin_slows_the_swarm() -> None:
    slow = attrs.evolve(SWARM30, origin_up=1.25 * MiB)
    assert figures(simulate(slow), 1.0)["p50_s"] > figures(simulate(SWARM30), 1.0)["p50_s"]


def test_per_piece_delays_slow_the_swarm() -> None:
    base = figures(simulate(SWARM30), 1.0)["p50_s"]
    assert figures(simulate(SWARM30, constants=Constants(have_delay_s=0.5)), 1.0)["p50_s"] > base
    assert figures(simulate(SWARM30, constants=Constants(start_s=2.0)), 1.0)["p50_s"] >= base + 2.0 - 0.1


def test_the_committed_constants_reproduce_the_recorded_measurements() -> None:
    calibration = model_calibration.load()
    assert calibration.measurements, "netsim/calibration.toml records no measurement"
    for measurement in calibration.measurements:
        p50, p99, _ = model_calibration.errors(measurement, calibration.constants)
        assert abs(p50) <= 0.15 and abs(p99) <= 0.15, (measurement.scenario, measurement.agents, p50, p99)


def test_drifted_constants_would_not_reproduce_them() -> None:
    calibration = model_calibration.load()
    drifted = attrs.evolve(calibration.constants, have_delay_s=calibration.constants.have_delay_s + 1.0)
    assert model_calibration.worst_error(calibration.measurements, drifted) > 0.15


def test_constants_can_be_overridden_for_what_ifs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "what-if.json"
    assert main(["model", str(CONFIGS / "smoke.toml"), "--constant", "have_delay_s=0.5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["constants"]["have_delay_s"] == 0.5
    for bad in ("speed=1", "have_delay_s=-1", "have_delay_s=inf", "origin_piece_quota=1.5"):
        assert main(["model", str(CONFIGS / "smoke.toml"), "--constant", bad]) == 2
        assert "--constant" in capsys.readouterr().err


def test_settings_the_model_knows_change_its_policy_and_the_rest_are_named() -> None:
    policy, ignored = policy_from_settings(["swarm.unchoke_slots=3", "swarm.seed_upload_slots = 2",
                                            "log.level=debug", "agent.stream_window=x"])
    assert (policy.unchoke_slots, policy.seed_upload_slots) == (3, 2)
    assert ignored == ["log.level=debug", "agent.stream_window=x"]


def test_model_cli_on_swarm30_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "swarm30.json", tmp_path / "swarm30.png"
    assert main(["model", str(CONFIGS / "swarm30.toml"), "--json", str(out), "--plot", str(png)]) == 0
    prediction = json.loads(out.read_text())
    (row,) = prediction["runs"]
    assert row["hosts"] == 30 and row["p50_vs_bound"] >= 1.0 and row["p999_s"] >= row["p99_s"] >= row["p50_s"]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "p99.9" in capsys.readouterr().out


def test_model_cli_on_kraken_scales_and_compares_with_the_published_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "kraken.json", tmp_path / "kraken.png"
    assert main(["model", str(CONFIGS / "kraken2600.toml"), "--hosts", "8", "--scale", "4",
                 "--json", str(out), "--plot", str(png)]) == 0
    prediction = json.loads(out.read_text())
    assert [row["hosts"] for row in prediction["runs"]] == [4, 8]
    assert prediction["reference"]["p999_s"] == 22.0 and prediction["layers"] == 2 and prediction["origins"] == 5
    assert all(row["lower_bound_s"] == pytest.approx(10.0) for row in prediction["runs"])
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "against Kraken" in capsys.readouterr().out


def test_netsim_run_refuses_what_only_the_model_can_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(CONFIGS / "kraken2600.toml")]) == 2
    assert "netsim model" in capsys.readouterr().err
    assert load_scenario(CONFIGS / "swarm30.toml").runnable() is None


@pytest.mark.parametrize(("text", "message"), [
    ("agents = 10\nlayerz = 2\n", "layerz: unknown key"),
    ("agents = 10\n[image]\nlayers = []\n", "layers"),
    ("agents = 10\norigins = 1.5\n", "origins"),
    ("agents = 10\n[arrivals]\nmode = \"staggered\"\n", "arriving at once"),
    ("agents = 10\n[reference]\nname = \"x\"\n", "reference"),
    ("agents = 10\n[links]\nagent_up = 0\n", "every link capped"),
    ("agents = 10\nblob_size = 0\n", "blob size"),
    ("agents = 10000\n[image]\nlayers = [" + ", ".join(['"4GiB"'] * 100) + "]\n", "more than the model holds"),
    ("agents = 3\nblob_size = \"64MiB\"\n[links]\norigin_up = 1\n", "links too slow"),
])
def test_bad_scenarios_are_refused_with_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      text: str, message: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(text)
    assert main(["model", str(scenario)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("netsim model: ") and message in error and "Traceback" not in error


@pytest.mark.parametrize("argv", [["--scale", "10,x"], ["--hosts", "0"], ["--scale", "200000"], ["--seed", "-1"]])
def test_bad_host_counts_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", str(CONFIGS / "swarm30.toml"), *argv]) == 2
    assert "netsim model: " in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_and_leave_the_old_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", str(CONFIGS / "smoke.toml"), "--json", str(tmp_path / "missing" / "out.json")]) == 1
    assert "cannot write" in capsys.readouterr().err
    calibration = tmp_path / "calibration.toml"
    calibration.write_text('fit = ["origin_piece_quota"]\n[constants]\n')
    # Where the new file would be written first is taken (as a full disk would refuse it).
    model_calibration.temporary_for(calibration).mkdir()
    code = main(["model", "calibrate", str(_report(tmp_path / "tiny.json")), "--calibration", str(calibration)])
    assert code == 1 and "cannot write" in capsys.readouterr().err
    assert calibration.read_text() == 'fit = ["origin_piece_quota"]\n[constants]\n'


def _report(path: Path, **changes: object) -> Path:
    report = {"scenario": "tiny", "agents": 4, "blob_size": 2 * MiB,
              "links": {"origin_up": 4 * MiB, "agent_up": 2 * MiB, "agent_down": 8 * MiB},
              "lower_bound_s": 0.8, "p50_s": 1.0, "p99_s": 1.1, "origin_egress_x": 1.5,
              "settings": {"agent": ["swarm.unchoke_slots=4"], "herd": []}, **changes}
    path.write_text(json.dumps(report))
    return path


def test_calibrate_fits_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calibration = tmp_path / "calibration.toml"
    calibration.write_text('fit = ["origin_piece_quota"]\n[constants]\norigin_piece_quota = 20\n')
    report = _report(tmp_path / "tiny.json")
    assert main(["model", "calibrate", str(report), "--calibration", str(calibration)]) == 0
    written = model_calibration.load(calibration)
    (measurement,) = written.measurements
    assert measurement.settings == ("swarm.unchoke_slots=4",) and measurement.source == str(report)
    assert written.max_error == pytest.approx(model_calibration.worst_error([measurement], written.constants))
    assert written.max_error <= model_calibration.worst_error(
        [measurement], attrs.evolve(written.constants, origin_piece_quota=20))
    assert "tiny" in capsys.readouterr().out


def test_an_image_reports_layers_are_modelled_as_its_torrents(tmp_path: Path) -> None:
    image = {"layers": [{"size": MiB, "digest": "sha256:1"}, {"size": 3 * MiB, "digest": "sha256:2"}]}
    measurement = model_calibration.measurement_from_report(_report(tmp_path / "image.json", image=image,
                                                                    blob_size=4 * MiB))
    assert measurement.swarm().layer_sizes == (MiB, 3 * MiB)


@pytest.mark.parametrize(("changes", "message"), [
    ({"p50_s": "fast"}, "not a netsim report"), ({"links": None}, "not a netsim report"),
    ({"settings": 3}, "not a netsim report"), ({"agents": 10**9}, "more than the model holds"),
    ({"links": {"origin_up": 0, "agent_up": 1, "agent_down": 1}}, "every link capped"),
    ({"image": {"layers": [{"digest": "sha256:1"}]}}, "not a netsim report"),
])
def test_calibrate_refuses_what_is_not_a_report_it_can_model(tmp_path: Path, changes: dict[str, object],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model_calibration.measurement_from_report(_report(tmp_path / "bad.json", **changes))


def test_a_calibration_that_fits_an_unknown_constant_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calibration.toml"
    path.write_text('fit = ["speed"]\n[constants]\n')
    with pytest.raises(ConfigError, match="cannot fit speed"):
        model_calibration.load(path)


def test_the_scenario_view_adds_layers_and_origins() -> None:
    kraken = load_scenario(CONFIGS / "kraken2600.toml")
    swarm = swarm_of(kraken, agents=100)
    assert (swarm.agents, swarm.layer_sizes, swarm.origins) == (100, (1500 * MiB, 1500 * MiB), 5)
    assert kraken.lower_bound() == pytest.approx(10.0)
