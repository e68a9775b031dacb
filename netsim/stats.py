"""Statistics of a run's samples: percentiles of latencies and completion times, and trends."""

from __future__ import annotations

import statistics


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an already sorted list."""
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def late_slope(samples: list[tuple[float, int]]) -> float | None:
    """RSS growth over the second half of the run, in MiB a minute (a least-squares fit): the
    first half is warm-up (caches filling), what still grows after it may be a leak."""
    late = samples[len(samples) // 2:]
    if len(late) < 3 or late[0][0] == late[-1][0]:
        return None
    slope = statistics.linear_regression([t for t, _ in late], [kib for _, kib in late]).slope
    return slope * 60 / 1024
