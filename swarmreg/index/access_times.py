"""Manifests' access times (``manifests.accessed``), renewed when a client pulls one.

A pull reads the index (an agent's or the proxy's GET of the manifest record, a tag resolved
to it), and reads must not write the database each: ``touch`` only notes the time in memory, and
``run`` writes the notes every ``interval`` seconds in one transaction, and once more when the
service stops (shielded, with a deadline). Notes a failed write could not keep stay for the next
try. At most one note per manifest is held, so memory is bounded by the index's own size.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import trio

from swarmreg.errors import SwarmregError
from swarmreg.index.store import IndexStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0
# Seconds the last flush may take when the service stops.
FINAL_FLUSH_TIMEOUT = 2.0


def _now() -> str:
    # The store's own format (IndexStore's created, linked): ISO 8601 UTC with milliseconds.
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AccessTimes:
    """Pulls noted in memory, written to ``store`` in batches."""

    def __init__(self, store: IndexStore, interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[tuple[str, str], str] = {}
        self.flushed = 0  # manifests written, for tests and logs

    def touch(self, repository: str, digest: object) -> None:
        """Note that the manifest ``digest`` of ``repository`` was pulled now."""
        self._pending[(repository, str(digest))] = _now()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write the noted times (never moving one back); returns how many were noted."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        rows = [(at, repository, digest, at) for (repository, digest), at in pending.items()]
        try:
            await self.store.write(lambda db: db.executemany(
                "UPDATE manifests SET accessed = ? WHERE repository = ? AND digest = ? "
                "AND (accessed IS NULL OR accessed < ?)", rows))
        except BaseException:
            for key, at in pending.items():  # kept for the next try; a newer note wins
                self._pending[key] = max(at, self._pending.get(key, at))
            raise
        self.flushed += len(rows)
        return len(rows)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except (SwarmregError, OSError) as error:
            log.warning("writing %d access time(s) failed (kept for the next try): %s", self.pending, error)
        except Exception:  # the index serves on; its pulls are only not counted yet
            log.exception("writing access times failed")

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every ``interval`` seconds until ``stop``, then once more (see ``close``)."""
        task_status.started()
        try:
            while not stop.is_set():
                with trio.move_on_after(self.interval):
                    await stop.wait()
                await self._flush_logged()
        finally:
            await self.close()

    async def close(self) -> None:
        """The last flush: shielded, at most FINAL_FLUSH_TIMEOUT seconds (the notes are lost after)."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_FLUSH_TIMEOUT) as scope:
            await self._flush_logged()
        if scope.cancelled_caught:
            log.warning("the last write of access times did not finish in %gs", FINAL_FLUSH_TIMEOUT)
