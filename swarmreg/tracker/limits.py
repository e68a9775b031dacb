"""A token bucket: how fast one tracker connection may send frames."""

from __future__ import annotations

import trio


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved; ``take`` waits for one when none is left.

    Waiting (instead of refusing) throttles a flooding peer through TCP backpressure while an
    agent re-announcing thousands of blobs after a reconnect still gets through, only slower.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = trio.current_time()

    async def take(self) -> None:
        now = trio.current_time()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            await trio.sleep((1 - self._tokens) / self.rate)
            self._tokens, self._stamp = 1.0, trio.current_time()
        self._tokens -= 1
