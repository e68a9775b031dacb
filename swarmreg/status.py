"""What one daemon keeps for its status page (GET /status) that no role keeps: when it started,
its latest errors, and the status figures roles without an HTTP port of their own hand in.

Framework-free and per node (swarmreg.node.Node.status): two daemons in one process never mix.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

# Errors a node remembers for its status page: the latest ones.
RECENT_ERRORS = 50
# An error's text is cut to this many characters (a path, a message: it is shown, not parsed).
ERROR_TEXT = 300
# Seconds the count of held blobs (a directory scan in a worker thread) is reused.
HELD_REFRESH = 10.0


@attrs.define(eq=False)
class NodeStatus:
    """One daemon's start time, recent errors and the roles' status figures (by role)."""

    started: float = attrs.field(factory=time.time)  # Unix time
    since: float = attrs.field(factory=time.monotonic)
    errors: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=RECENT_ERRORS))
    # Figures a role reports on every port's status, e.g. the tracker's torrents (it has no HTTP port).
    sources: dict[str, Callable[[], dict[str, Any]]] = attrs.field(factory=dict)
    _held: tuple[int, int] = (0, 0)
    _held_at: float | None = None
    _held_lock: trio.Lock = attrs.field(factory=trio.Lock)

    def uptime(self) -> float:
        """Seconds since the daemon started."""
        return time.monotonic() - self.since

    def record(self, where: str, message: str, status: int | None = None) -> None:
        """Remember an error: where it happened (a request, a download) and what it says."""
        self.errors.append({"at": round(time.time(), 3), "where": where[:ERROR_TEXT],
                            "message": message[:ERROR_TEXT], "status": status})

    async def held(self, scan: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """(blobs, bytes) held, from ``scan`` (blocking, run in a worker thread) at most every
        HELD_REFRESH seconds."""
        async with self._held_lock:
            now = time.monotonic()
            if self._held_at is None or now - self._held_at >= HELD_REFRESH:
                self._held = await trio.to_thread.run_sync(scan)
                self._held_at = time.monotonic()
            return self._held
