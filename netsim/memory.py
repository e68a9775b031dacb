"""Daemons' memory from /proc: one reading, and samples over a run with the figures they give."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from netsim.cluster import alive, pid_of
from netsim.cpu import process_seconds
from netsim.stats import late_slope
from swarmreg.devcluster import DaemonProcess


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
        # name -> samples of (seconds, RSS, anonymous RSS, file-backed RSS), in KiB: file pages are
        # mapped blobs (libtorrent's storage maps the files it serves), anonymous ones the heaps
        self.rss: dict[str, list[tuple[float, int, int, int]]] = {}

    async def sample(self, t0: float, interval: float = 0.5) -> None:
        """Every ``interval`` seconds each daemon's RSS, until cancelled."""
        while True:
            for process in self.processes:
                if (status := read_status(pid_of(process))).get("VmRSS"):
                    self.rss.setdefault(process.name, []).append((
                        round(time.monotonic() - t0, 2), status["VmRSS"], status.get("RssAnon", 0),
                        status.get("RssFile", 0)))
            await trio.sleep(interval)

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
                "anon_slope_mib_per_min": late_slope([(sample[0], sample[2]) for sample in series])}
        return figures
