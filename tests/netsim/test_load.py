"""The registry load test, briefly: docker-style pulls through an agent and pushes to the proxy,
with real daemons, and not one failed request. (Its performance figures are never asserted.)"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from netsim.images import layer_sizes
from netsim.load import Options, main
from netsim.memory import heap_growth, per_minute
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
        assert [row["minute"] for row in daemon["per_minute"]] == [pytest.approx(daemon["per_minute"][0]["t_s"] / 60,
                                                                                 abs=0.02)]
        assert daemon["per_minute"][0]["rss_mib"] > 0 and daemon["per_minute"][0]["cpu_s"] > 0
        assert daemon["rss_growth_from_minute_2_pct"] is None  # an 8 s run has no minute 2
    assert figures["exit_status"] == {"herd": 0, "agent": 0}, "both daemons stopped cleanly"
    printed = capsys.readouterr().out
    assert "p99 ms" in printed and "peak RSS" in printed and "failed requests: 0" in printed
    assert "per minute" in printed and "RSS growth from minute 2 to the last whole minute" in printed


def test_the_default_run_is_ten_minutes_with_rss_and_cpu_each_minute() -> None:
    assert Options().duration == 600.0
    # (seconds, RSS, anonymous, file-backed KiB, CPU seconds so far), a sample every 30 s for 5.5 minutes
    series = [(30.0 * i, 100 * 1024 + 1024 * i, 50 * 1024, 10, 2.0 * i) for i in range(12)]
    figures = per_minute(series)
    rows = figures["per_minute"]
    assert [row["minute"] for row in rows] == [1, 2, 3, 4, 5, 5.5]
    assert [row["rss_mib"] for row in rows] == [102, 104, 106, 108, 110, 111]
    assert [row["cpu_s"] for row in rows] == [4, 4, 4, 4, 4, 2]
    assert rows[1]["peak_rss_mib"] == 104 and rows[0]["anon_mib"] == 50
    assert figures["rss_growth_from_minute_2_pct"] == pytest.approx(100 * 6 / 104), "to minute 5"
    assert per_minute([])["per_minute"] == [] and per_minute(series[:3])["rss_growth_from_minute_2_pct"] is None


def test_layer_sizes_and_percentiles() -> None:
    assert layer_sizes(5, 1 << 10, 32 << 20) == [1024, 13777, 185364, 2493948, 33554432]
    assert layer_sizes(1, 1 << 10, 4 << 20) == [4 << 20]
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 0.5) == 51.0 and percentile(ordered, 0.99) == 99.0 and percentile(ordered, 1.0) == 100.0


def test_heap_growth_names_what_grew_between_snapshots(tmp_path: Path) -> None:
    tracemalloc.start(4)
    try:
        tracemalloc.take_snapshot().dump(str(tmp_path / "1.snapshot"))
        grown = [bytes(1000) + bytes([i % 256]) for i in range(2000)]  # about 2 MiB, held
        tracemalloc.take_snapshot().dump(str(tmp_path / "2.snapshot"))
    finally:
        tracemalloc.stop()
    growth = heap_growth(tmp_path)
    assert growth["snapshots"] == 2 and growth["heap_mib"][1] - growth["heap_mib"][0] >= 1.5
    top = growth["top"][0]
    assert top["size_diff_kib"] >= 1900 and "test_load.py" in "".join(top["traceback"])
    assert len(grown) == 2000
    assert heap_growth(tmp_path / "none") == {"snapshots": 0, "heap_mib": [], "top": []}
