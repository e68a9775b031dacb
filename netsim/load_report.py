"""The load test's report: the figures of a run (rates, latency percentiles, memory), and the
table printed at its end."""

from __future__ import annotations

import os
from typing import Any

from netsim.cpu import own_seconds
from netsim.images import Image, size_label
from netsim.registry_client import Recorder
from netsim.stats import percentile

KiB, MiB = 1 << 10, 1 << 20


def _kind_order(kind: str) -> tuple[str, float]:
    """Kinds by name, a layer's by its size ("pull:layer 512 KiB" before "pull:layer 4 MiB")."""
    name, _, size = kind.partition(" ")
    if not size:
        return name, 0.0
    number, unit = size.split()
    return name, float(number) * (MiB if unit == "MiB" else KiB)


def summarize(options: dict[str, Any], main: Image, recorder: Recorder, elapsed: float, memory: dict[str, Any],
              rss: dict[str, list[tuple[float, int, int, int, float]]]) -> dict[str, Any]:
    """The report's figures: per-kind rates and latency percentiles, throughput, failures, memory
    (``options``: the load's, as a dict)."""
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({*recorder.latencies, *recorder.failed_by_kind}, key=_kind_order):
        ordered = sorted(recorder.latencies.get(kind, []))
        failed = recorder.failed_by_kind[kind]
        entry: dict[str, Any] = {"requests": len(ordered) + failed, "ok": len(ordered), "failed": failed,
                                 "per_s": (len(ordered) + failed) / elapsed}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            entry[f"{name}_ms"] = 1000 * percentile(ordered, q) if ordered else None
        kinds[kind] = entry
    total = sum(entry["requests"] for entry in kinds.values())
    return {
        "duration_s": options["duration"], "elapsed_s": elapsed, "pullers": options["pullers"],
        "pushers": options["pushers"], "options": options,
        "image": {"repository": main.repository, "tag": main.tag, "manifest": main.manifest_digest,
                  "layers": [layer.size for layer in main.layers], "bytes": main.size},
        "requests": total, "requests_per_s": total / elapsed,
        "failed_requests": sum(recorder.failed_by_kind.values()), "failures": dict(recorder.reasons),
        "failure_examples": recorder.examples, "kinds": kinds,
        "bytes_pulled": recorder.bytes_pulled, "pulled_mib_per_s": recorder.bytes_pulled / MiB / elapsed,
        "bytes_pushed": recorder.bytes_pushed, "image_pulls": dict(recorder.pulls),
        "image_pulls_total": sum(recorder.pulls.values()), "pushes": recorder.pushes,
        "daemons": memory, "rss_samples_kib": {"columns": ["t", "rss", "anon", "file", "cpu_s"], **rss},
        "load_generator_cpu_s": own_seconds(),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(figures: dict[str, Any]) -> str:
    """A terminal table of the run: one row per kind of request, then totals, failures and memory."""
    image = figures["image"]
    lines = [
        f"netsim load: {figures['elapsed_s']:.0f} s, pullers on the agent: {figures['pullers']}, "
        f"pushers on the proxy: {figures['pushers']}, {os.cpu_count()} cores, loopback",
        f"image {image['repository']}:{image['tag']}: {len(image['layers'])} layers, "
        f"{image['bytes'] / MiB:.1f} MiB ({', '.join(size_label(size) for size in image['layers'])})",
        "",
        f"{'kind':<26}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>10}"
        f"{'failed':>8}",
    ]
    for kind, entry in figures["kinds"].items():
        latencies = "".join(f"{_ms(entry[f'{q}_ms']):>{9 if q != 'max' else 10}}" for q in ("p50", "p90", "p99", "max"))
        lines.append(f"{kind:<26}{entry['requests']:>10}{entry['per_s']:>9.1f}{latencies}{entry['failed']:>8}")
    pulls = figures["image_pulls"]
    lines += [
        f"{'all':<26}{figures['requests']:>10}{figures['requests_per_s']:>9.1f}{'':>45}{figures['failed_requests']:>8}",
        "",
        f"pulled {figures['bytes_pulled'] / (1 << 30):.2f} GiB ({figures['pulled_mib_per_s']:.1f} MiB/s); "
        f"image pulls {figures['image_pulls_total']} ({pulls.get('main', 0)} of the main image, "
        f"{pulls.get('fresh', 0)} of freshly pushed ones); pushes {figures['pushes']} "
        f"({figures['bytes_pushed'] / MiB:.1f} MiB)",
        f"failed requests: {figures['failed_requests']}",
    ]
    for reason, count in figures["failures"].items():
        lines.append(f"  {count} x {reason}")
    for example in figures["failure_examples"][:3]:
        lines.append(f"  e.g. at {example['t']:.1f} s: {example['detail']}")
    lines += ["", "memory (MiB): RSS = anonymous (heaps) + file-backed (mapped blobs); 'late' = growth a minute "
              "over the second half", f"{'daemon':<8}{'peak RSS':>10}{'first':>8}{'last':>8}{'late/min':>10}"
              f"{'anon peak':>11}{'first':>8}{'last':>8}{'late/min':>10}{'CPU s':>8}  exit  log warn/error: load, stop"]
    for name, daemon in figures["daemons"].items():
        logs = figures.get("daemon_logs", {}).get(name, {})
        cpu = f"{daemon['cpu_s']:.0f}"
        slope, anon_slope = (_slope(daemon["rss_slope_mib_per_min"]), _slope(daemon["anon_slope_mib_per_min"]))
        lines.append(f"{name:<8}{daemon['peak_rss_mib']:>10.1f}{daemon['rss_first_mib']:>8.1f}"
                     f"{daemon['rss_last_mib']:>8.1f}{slope:>10}{daemon['anon_peak_mib']:>11.1f}"
                     f"{daemon['anon_first_mib']:>8.1f}{daemon['anon_last_mib']:>8.1f}{anon_slope:>10}{cpu:>8}"
                     f"  {figures.get('exit_status', {}).get(name, '-')!s:>4}"
                     f"  {_log_counts(logs.get('during_load'))}, {_log_counts(logs.get('while_stopping'))}")
    for name, logs in figures.get("daemon_logs", {}).items():
        for line in logs["during_load"]["first"][:3]:
            lines.append(f"  {name}: {line}")
    for name, heap in figures.get("heap_growth", {}).items():
        sizes = ", ".join(f"{size:.1f}" for size in heap["heap_mib"])
        lines += ["", f"{name}: Python heap (tracemalloc) at each snapshot, MiB: {sizes or '-'}; grew most:"]
        for stat in heap["top"][:8]:
            where = " <- ".join(line.strip() for line in reversed(stat["traceback"]) if line.startswith("  File"))
            lines.append(f"  {stat['size_diff_kib']:+9.0f} KiB {stat['count_diff']:+7d} blocks  {where[:400]}")
    lines += ["", *minutes_table(figures["daemons"]),
              f"load generator (this process): {figures['load_generator_cpu_s']:.0f} CPU s"]
    return "\n".join(lines)


def minutes_table(daemons: dict[str, Any]) -> list[str]:
    """Each daemon's RSS at the end of each minute (anonymous part, highest in the minute) and the
    CPU seconds it used in that minute, then RSS growth from minute 2 to the last whole minute."""
    names = list(daemons)
    rows: dict[float, dict[str, dict[str, Any]]] = {}
    for name in names:
        for row in daemons[name].get("per_minute", []):
            rows.setdefault(row["minute"], {})[name] = row
    head = "".join(f"{name + ' RSS':>13}{'anon':>8}{'max':>8}{'CPU s':>7}" for name in names)
    lines = ["per minute (MiB at the minute's end; max: highest sampled in it; CPU s used in it)",
             f"{'minute':<8}{head}"]
    for minute in sorted(rows):
        cells = ""
        for name in names:
            row = rows[minute].get(name)
            cells += ("{:>13.1f}{:>8.1f}{:>8.1f}{:>7.1f}".format(
                row["rss_mib"], row["anon_mib"], row["peak_rss_mib"], row["cpu_s"]) if row else f"{'-':>36}")
        lines.append(f"{minute:<8g}{cells}")
    growth = ", ".join(f"{name} {_pct(daemons[name].get('rss_growth_from_minute_2_pct'))}" for name in names)
    lines.append(f"RSS growth from minute 2 to the last whole minute: {growth}")
    return lines


def _pct(value: float | None) -> str:
    return "- (run shorter than 3 minutes)" if value is None else f"{value:+.1f}%"


def _slope(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _log_counts(found: dict[str, Any] | None) -> str:
    if not found:
        return "-"
    levels = found["levels"]
    text = f"{levels.get('WARNING', 0)}/{levels.get('ERROR', 0) + levels.get('CRITICAL', 0)}"
    return text + (f" ({found['tracebacks']} tracebacks)" if found["tracebacks"] else "")

