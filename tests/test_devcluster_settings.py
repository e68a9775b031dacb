"""`swarmreg devcluster --set-herd/--set-agents`: settings passed through to the nodes' daemons."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from swarmreg.config import load_config
from swarmreg.devcluster import DEVCLUSTER, DaemonProcess, node_overrides


def test_settings_reach_the_herd_and_every_agent_last_so_they_win() -> None:
    overrides = node_overrides(None, (), herd=["tracker.max_peers=7"],
                               agents=["agent.cache.max_size=300MiB", "agent.stall_timeout=5"])
    assert set(overrides) == {spec.name for spec in DEVCLUSTER}
    assert overrides["herd"][-1] == "tracker.max_peers=7"
    for name in ("agent-one", "agent-two"):
        assert overrides[name][-2:] == ["agent.cache.max_size=300MiB", "agent.stall_timeout=5"]
        assert "tracker.max_peers=7" not in overrides[name]
        config = load_config(None, overrides[name])
        assert config.agent.cache.max_size == 300 << 20 and config.agent.stall_timeout == 5
    assert load_config(None, overrides["herd"]).tracker.max_peers == 7
    # On the daemon's command line as --set, as the daemon takes them.
    process = DaemonProcess("agent-one", ("agent",), "/nonexistent", overrides=overrides["agent-one"])
    assert process.argv[-2:] == ["--set", "agent.stall_timeout=5"]


def test_a_bad_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "swarmreg", "devcluster", "--data-dir", str(tmp_path),
                           "--set-agents", "agent.cache.max_size=lots"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--set-agents" in done.stderr and "agent.cache.max_size" in done.stderr
    assert not list(tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-m", "swarmreg", "devcluster", "--data-dir", str(tmp_path),
                           "--set-herd", "no-equals-sign"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--set-herd" in done.stderr, done.stderr
