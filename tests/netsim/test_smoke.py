"""netsim's smoke scenario runs in the suite: real daemons, every agent's content checked by digest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from netsim.__main__ import main
from netsim.network import sweep
from netsim.runner import run_scenario
from netsim.scenario import Arrivals, Links, Scenario, load_scenario
from swarmreg.config import ConfigError
from tests.netsim.helpers import NETNS, leftovers, needs_netns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["auto", "loopback"])
def test_smoke_runs_and_reports(mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "smoke.json", tmp_path / "smoke.png"
    assert main(["run", str(ROOT / "configs/netsim/smoke.toml"), "--mode", mode, "--json", str(out),
                 "--plot", str(png), "--workdir", str(tmp_path / "work")]) == 0
    figures = json.loads(out.read_text())
    unavailable = f"loopback (namespaces unavailable: {NETNS})"
    expected = "loopback" if mode == "loopback" else ("netns" if NETNS is None else unavailable)
    assert figures["mode"] == expected
    assert figures["completed"] == 5 and figures["failed"] == []
    # T* = max(F/u_origin, F/d_agent, N*F/(u_origin + N*u_agent)) = 5 * 8 / (8 + 5 * 4) s
    assert figures["lower_bound_s"] == pytest.approx(40 / 28)
    assert 0 < figures["p50_s"] <= figures["p90_s"] <= figures["max_s"]
    assert figures["origin_egress_x"] >= 1.0, "the origin sent the blob at least once"
    assert figures["samples"], "bytes over time were sampled"
    assert set(figures["milestones_p50_s"]) == {"metainfo", "announced", "first_piece", "finished", "verified"}
    assert figures["cpu"]["daemons_s"] > 0 and 0 < figures["cpu"]["machine_busy"] <= 1
    # CPU per GiB delivered: the daemons' seconds over the 5 x 8 MiB (or more) the agents received.
    assert figures["cpu"]["daemons_s_per_gib"] == pytest.approx(
        figures["cpu"]["daemons_s"] / (figures["received_bytes"] / (1 << 30)))
    assert 0 <= figures["cpu"]["idle_cores_per_daemon"] <= figures["cpu"]["idle_daemons_cores"]
    assert sorted(figures["completion_by_agent"]) == figures["completion_s"]
    printed = capsys.readouterr().out
    assert "lower bound T*" in printed and "p99 completion" in printed and f"{expected} mode" in printed
    assert "where the time goes" in printed and "CPU per GiB" in printed
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    assert leftovers(os.getpid()) == []


@needs_netns
def test_a_failed_run_leaves_no_namespace_link_or_process(tmp_path: Path) -> None:
    # One agent, a timeout far too short: the pull fails, the run still tears everything down.
    scenario = Scenario("doomed", agents=1, blob_size=4 << 20, links=Links(origin_up=1 << 20), timeout=0.5)
    figures = trio.run(run_scenario, scenario, tmp_path, "netns")
    assert figures["mode"] == "netns" and figures["completed"] == 0 and "not done" in figures["failed"][0]["error"]
    assert leftovers(os.getpid()) == []


@needs_netns
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_cleans_up(signum: int, tmp_path: Path) -> None:
    scenario = tmp_path / "slow.toml"
    scenario.write_text('agents = 3\nblob_size = "64MiB"\n[links]\norigin_up = "1MiB"\n')
    # The run's output goes to a file: a pipe nobody reads until the end can fill and block it.
    output = tmp_path / "output.txt"
    with open(output, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "netsim", "run", str(scenario), "--mode", "netns",
                                    "--workdir", str(tmp_path / "work")], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        # Interrupt it mid-run, once every agent has started.
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "work").glob("agent-*/ready.json"))) < 3:
            assert time.monotonic() < deadline and process.poll() is None, output.read_text()
            time.sleep(0.1)
        assert leftovers(process.pid), "the run had namespaces and daemons"
        signals = _signal_masks(process.pid)
        process.send_signal(signum)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit 60 s after signal {signum} ({signals}):\n{output.read_text()[-4000:]}")
        assert leftovers(process.pid) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _signal_masks(pid: int) -> str:
    """The process's blocked, ignored and caught signal masks, for a failure's message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "no status"
    return ", ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


@needs_netns
def test_the_sweep_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    scenario = tmp_path / "slow.toml"
    scenario.write_text('agents = 2\nblob_size = "64MiB"\n[links]\norigin_up = "1MiB"\n')
    process = subprocess.Popen([sys.executable, "-m", "netsim", "run", str(scenario), "--mode", "netns",
                                "--workdir", str(tmp_path / "work")], cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "work").glob("agent-*/ready.json"))) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.kill()  # no clean-up can run: the next run's sweep (or `netsim clean`) does it
    process.wait()
    assert leftovers(process.pid)
    # The sweep every run starts with, not `netsim clean`: that removes every run's namespaces,
    # and would take down the runs and tests of others on this machine.
    assert process.pid in trio.run(sweep)
    assert leftovers(process.pid) == []


def test_lower_bound_and_arrivals() -> None:
    scenario = Scenario("x", agents=10, blob_size=100, links=Links(origin_up=10, agent_up=5, agent_down=50))
    assert scenario.lower_bound() == max(100 / 10, 100 / 50, 10 * 100 / (10 + 10 * 5))
    assert Arrivals("staggered", 2.0).start_times(3) == [0.0, 2.0, 4.0]
    assert Arrivals("waves", 5.0, wave_size=2).start_times(5) == [0.0, 0.0, 5.0, 5.0, 10.0]


def test_every_shipped_scenario_loads_and_bad_ones_are_refused(tmp_path: Path) -> None:
    for path in (ROOT / "configs/netsim").glob("*.toml"):
        assert load_scenario(path).name == path.stem
    bad = tmp_path / "bad.toml"
    for text, named in (('agents = 5\nblob_size = "lots"\n[links]\norigin_upp = 1\n',
                         ["blob_size", "links.origin_upp"]),
                        ("agents = 0\n", ["agents"])):
        bad.write_text(text)
        with pytest.raises(ConfigError) as refused:
            load_scenario(bad)
        assert all(name in str(refused.value) for name in named), refused.value
