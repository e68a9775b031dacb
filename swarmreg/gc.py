"""What one garbage collection reports (the origin's POST /gc answer, its /stats and its log line).

Framework-free, for the collector (swarmreg.origin.gc) and whoever prints a report.
"""

from __future__ import annotations

from typing import Any

import attrs

# A report lists at most this many errors (and says how many more there were).
MAX_ERRORS = 100


@attrs.define
class GcReport:
    """One collection's figures; ``to_json`` is the wire form."""

    dry_run: bool
    grace: float
    started: str = ""  # ISO 8601, UTC
    # Manifests recorded before index schema 2 whose references were read from their bytes.
    backfilled: int = 0
    # Digests the mark found live (manifests, their references, remaining blob links).
    marked: int = 0
    # Blob links older than the grace period that no manifest referenced (would be) removed.
    links_removed: int = 0
    # Blobs held (in the store or a writable backend) that the mark did not find live.
    unreferenced: int = 0
    # Of those, (would be) removed, and their bytes (each blob's size once, however many copies).
    swept: int = 0
    bytes_freed: int = 0
    # Of those, swept before the grace period ended because a manifest's delete released them.
    swept_released: int = 0
    # Copies removed from writable backends (counted in ``swept`` once per blob).
    backend_copies: int = 0
    # Kept: committed within the grace period, or being written right now.
    kept_young: int = 0
    kept_busy: int = 0
    torrents_removed: int = 0
    trackers_told: int = 0
    mark_seconds: float = 0.0
    sweep_seconds: float = 0.0
    errors: list[str] = attrs.field(factory=list)
    errors_dropped: int = 0

    def error(self, message: str) -> None:
        """Record a problem (the first MAX_ERRORS; the rest are counted)."""
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)
        else:
            self.errors_dropped += 1

    def to_json(self) -> dict[str, Any]:
        """The report as the origin answers it."""
        report = attrs.asdict(self)
        for key in ("mark_seconds", "sweep_seconds"):
            report[key] = round(report[key], 3)
        return report

    def summary(self) -> str:
        """One log line."""
        return (f"garbage collection{' (dry run)' if self.dry_run else ''}: {self.marked} live, "
                f"{self.links_removed} stale link(s) {'to remove' if self.dry_run else 'removed'}, "
                f"{self.swept} of {self.unreferenced} unreferenced blob(s) "
                f"{'to sweep' if self.dry_run else 'swept'} ({self.bytes_freed} bytes), "
                f"{self.kept_young} kept young, {self.kept_busy} busy; mark {self.mark_seconds:.2f} s, "
                f"sweep {self.sweep_seconds:.2f} s; {len(self.errors) + self.errors_dropped} error(s)")
