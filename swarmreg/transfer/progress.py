"""Progress of a transfer on standard error: rich's bar (bytes, rate, time left) on a terminal, a
plain line every PLAIN_INTERVAL seconds and one at the end otherwise (a log, CI, a pipe)."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

PLAIN_INTERVAL = 5.0
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(count: float) -> str:
    """``12.3 MiB``: bytes in binary units, as the bar shows them."""
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("the last unit is returned above")


class Meter(Protocol):
    """What a transfer reports its progress to."""

    def advance(self, count: int) -> None: ...

    def reset(self, completed: int) -> None:
        """Start again from ``completed`` bytes (the bytes since were not kept)."""

    def close(self) -> None: ...


class _Rate(TransferSpeedColumn):
    """The rate in binary units, as the sizes are shown (rich's own column counts in kB, MB)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")


class Bar:
    """rich's progress bar for one transfer of ``total`` bytes (None: unknown), ``completed`` already done."""

    def __init__(self, description: str, total: int | None, completed: int, stream: TextIO) -> None:
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
            DownloadColumn(binary_units=True), _Rate(), TimeRemainingColumn(),
            console=Console(file=stream), transient=False)
        self.task = self.progress.add_task(description, total=total, completed=completed)
        self.progress.start()

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def reset(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)

    def close(self) -> None:
        self.progress.stop()


class Lines:
    """Plain lines: ``what: 12.0 MiB / 24.0 MiB (50%), 3.1 MiB/s`` every ``interval`` seconds and at the end."""

    def __init__(self, description: str, total: int | None, completed: int, stream: TextIO,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.description, self.total, self.done, self.stream = description, total, completed, stream
        self.interval = interval
        self.started = self.last = time.monotonic()
        self.moved = 0  # by this run (the rate's numerator; a resumed transfer started at ``completed``)

    def advance(self, count: int) -> None:
        self.done += count
        self.moved += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def reset(self, completed: int) -> None:
        self.done = completed

    def close(self) -> None:
        self._line(time.monotonic())

    def _line(self, now: float) -> None:
        rate = self.moved / max(now - self.started, 1e-3)
        total = "" if self.total is None else f" / {human_size(self.total)}"
        percent = f" ({100 * self.done // self.total}%)" if self.total else ""
        print(f"{self.description}: {human_size(self.done)}{total}{percent}, {human_size(rate)}/s",
              file=self.stream, flush=True)


def meter(description: str, total: int | None, completed: int = 0, stream: TextIO | None = None) -> Meter:
    """A bar when ``stream`` (standard error) is a terminal, else plain lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        return Bar(description, total, completed, stream)
    return Lines(description, total, completed, stream)
