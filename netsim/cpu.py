"""CPU accounting for a run: whether the machine, not the network, set the pace."""

from __future__ import annotations

import os
import resource

TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (0 if it is gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def own_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds of this process (netsim's pulls, hashing and sampling), or with
    ``RUSAGE_CHILDREN`` of its children that have been waited for (a client such as curl)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def machine_seconds() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    # user nice system idle iowait irq softirq steal; guest and guest_nice, after them, are
    # already counted in user and nice.
    values = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS, values[7] / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    busy, total, _ = machine_seconds()
    return busy, total
