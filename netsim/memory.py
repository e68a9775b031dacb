"""Daemons' memory from /proc: one reading, and samples over a run with the figures they give."""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from netsim.cluster import alive, pid_of
from netsim.cpu import process_seconds
from netsim.stats import late_slope
from swarmreg.devcluster import DaemonProcess

MIB = 1 << 20


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of a process, in KiB; empty once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(value.split()[0]) for key, _, value in (line.partition(":") for line in text.splitlines())
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class MemorySampler:
    """The RSS of each of ``processes`` over a run, and what it says about them."""

    def __init__(self, processes: Sequence[DaemonProcess]) -> None:
        self.processes = processes
        # name -> samples of (seconds, RSS, anonymous RSS, file-backed RSS in KiB, CPU seconds so
        # far): file pages are mapped blobs (libtorrent's storage maps the files it serves),
        # anonymous ones the heaps
        self.rss: dict[str, list[tuple[float, int, int, int, float]]] = {}

    async def sample(self, t0: float, interval: float = 0.5) -> None:
        """Every ``interval`` seconds each daemon's RSS, until cancelled."""
        while True:
            for process in self.processes:
                if (status := read_status(pid_of(process))).get("VmRSS"):
                    self.rss.setdefault(process.name, []).append((
                        round(time.monotonic() - t0, 2), status["VmRSS"], status.get("RssAnon", 0),
                        status.get("RssFile", 0), process_seconds(pid_of(process))))
            await trio.sleep(interval)

    async def snapshot_heaps(self, interval: float = 60.0) -> None:
        """Every ``interval`` seconds have each traced daemon (``netsim.traced``) write a snapshot
        of its Python heap, until cancelled."""
        while True:
            await trio.sleep(interval)
            self.snapshot_now()

    def snapshot_now(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGUSR1)

    def figures(self) -> dict[str, dict[str, Any]]:
        """Per daemon: peak RSS (the sampled one and the kernel's VmHWM), RSS at start and end, CPU.
        Read them before the daemons stop: VmHWM goes with the process."""
        figures = {}
        for process in self.processes:
            series = self.rss.get(process.name, [])
            samples, anon = [sample[1] for sample in series], [sample[2] for sample in series]
            status = read_status(pid_of(process))
            peak = max([*samples, status.get("VmHWM", 0)])
            figures[process.name] = {
                "pid": pid_of(process), "roles": list(process.roles), "alive": alive(process),
                "peak_rss_mib": peak / 1024, "sampled_peak_rss_mib": max(samples, default=0) / 1024,
                "vm_hwm_mib": status.get("VmHWM", 0) / 1024,
                "rss_first_mib": samples[0] / 1024 if samples else 0.0,
                "rss_last_mib": samples[-1] / 1024 if samples else 0.0, "cpu_s": process_seconds(pid_of(process)),
                "rss_slope_mib_per_min": late_slope([(sample[0], sample[1]) for sample in series]),
                "anon_first_mib": anon[0] / 1024 if anon else 0.0, "anon_last_mib": anon[-1] / 1024 if anon else 0.0,
                "anon_peak_mib": max(anon, default=0) / 1024,
                "anon_slope_mib_per_min": late_slope([(sample[0], sample[2]) for sample in series]),
                **per_minute(series)}
        return figures


def per_minute(series: list[tuple[float, int, int, int, float]]) -> dict[str, Any]:
    """The daemon at the end of each minute of the run (and at its end, if that is not on a
    minute): RSS, anonymous RSS, the highest RSS sampled in that minute, and the CPU seconds it
    used in it; and RSS growth from the end of minute 2 to the end of the last whole minute, in
    percent (the first two minutes are warm-up: caches filling, the image's blobs arriving; the
    run's last seconds, after the load has stopped, are not under load)."""
    rows: list[dict[str, Any]] = []
    if not series:
        return {"per_minute": rows, "rss_growth_from_minute_2_pct": None}
    end = series[-1][0]
    marks = [60.0 * minute for minute in range(1, int(end // 60) + 1)]
    if not marks or end - marks[-1] > 1.0:
        marks.append(end)
    start, cpu_before = 0, series[0][4]
    for mark in marks:
        stop = start
        while stop < len(series) and series[stop][0] <= mark:
            stop += 1
        if stop == start:  # no sample in this minute (a stalled sampler)
            continue
        t, rss, anon, _, cpu = series[stop - 1]
        rows.append({"minute": round(mark / 60, 2), "t_s": t, "rss_mib": rss / 1024, "anon_mib": anon / 1024,
                     "peak_rss_mib": max(sample[1] for sample in series[start:stop]) / 1024,
                     "cpu_s": cpu - cpu_before})
        start, cpu_before = stop, cpu
    at_two = next((row for row in rows if row["minute"] == 2), None)
    last = next((row for row in reversed(rows) if row["minute"] == int(row["minute"])), None)
    growth = None if at_two is None or last is None or last is at_two else \
        100 * (last["rss_mib"] - at_two["rss_mib"]) / at_two["rss_mib"]
    return {"per_minute": rows, "rss_growth_from_minute_2_pct": growth}


def heap_growth(directory: Path, top: int = 12) -> dict[str, Any]:
    """What grew on a traced daemon's Python heap (see ``netsim.traced``) between its first
    snapshot and its last: the heap's size in each snapshot, and the ``top`` allocation sites by
    growth, each with its traceback (innermost frame last)."""
    paths = sorted(directory.glob("*.snapshot"), key=lambda path: int(path.stem))
    if len(paths) < 2:
        return {"snapshots": len(paths), "heap_mib": [], "top": []}
    ignore = (tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap>"))
    first = tracemalloc.Snapshot.load(str(paths[0])).filter_traces(ignore)
    last = tracemalloc.Snapshot.load(str(paths[-1])).filter_traces(ignore)
    sizes = [sum(stat.size for stat in tracemalloc.Snapshot.load(str(path)).statistics("filename")) / MIB
             for path in paths]
    growth = [{"size_diff_kib": stat.size_diff / 1024, "count_diff": stat.count_diff, "size_kib": stat.size / 1024,
               "traceback": stat.traceback.format()[-8:]}
              for stat in last.compare_to(first, "traceback")[:top]]
    return {"snapshots": len(paths), "heap_mib": sizes, "top": growth}
