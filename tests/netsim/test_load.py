"""The registry load test, briefly: docker-style pulls through an agent and pushes to the proxy,
with real daemons, and not one failed request. (Its performance figures are never asserted.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netsim.images import layer_sizes
from netsim.load import main
from netsim.stats import percentile


@pytest.mark.slow
def test_short_load_run_has_no_failures_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    assert main(["--duration", "8", "--pullers", "3", "--pushers", "1", "--layers", "3", "--max-layer", "2MiB",
                 "--fresh-every", "2", "--json", str(out), "--workdir", str(tmp_path / "work")]) == 0
    figures = json.loads(out.read_text())
    assert figures["failed_requests"] == 0 and figures["failures"] == {}, figures["failure_examples"]
    kinds = figures["kinds"]
    pulls = sum(entry["ok"] for kind, entry in kinds.items() if kind.startswith("pull"))
    pushes = sum(entry["ok"] for kind, entry in kinds.items() if kind.startswith("push"))
    assert pulls > 0 and pushes > 0
    assert figures["image_pulls_total"] > 0 and figures["pushes"] > 0 and figures["bytes_pulled"] > 0
    layers = [kind for kind in kinds if kind.startswith("pull:layer ")]  # one kind per layer size
    assert len(layers) == 3
    for kind in ("pull:manifest", *layers, "push:upload-chunk", "push:manifest"):
        entry = kinds[kind]
        assert entry["requests"] > 0
        assert 0 < entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"] <= entry["max_ms"]
    assert set(figures["daemons"]) == {"herd", "agent"}
    for daemon in figures["daemons"].values():
        assert daemon["peak_rss_mib"] > 0 and daemon["alive"]
    assert figures["exit_status"] == {"herd": 0, "agent": 0}, "both daemons stopped cleanly"
    printed = capsys.readouterr().out
    assert "p99 ms" in printed and "peak RSS" in printed and "failed requests: 0" in printed


def test_layer_sizes_and_percentiles() -> None:
    assert layer_sizes(5, 1 << 10, 32 << 20) == [1024, 13777, 185364, 2493948, 33554432]
    assert layer_sizes(1, 1 << 10, 4 << 20) == [4 << 20]
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 0.5) == 51.0 and percentile(ordered, 0.99) == 99.0 and percentile(ordered, 1.0) == 100.0
