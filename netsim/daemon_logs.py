"""What the daemons logged: warnings, errors and tracebacks, while under load and while stopping."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

LOG_LEVEL = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (WARNING|ERROR|CRITICAL) ")


class LogFindings:
    """The logs of some daemons (name -> path), read once they have stopped."""

    def __init__(self, logs: dict[str, Path]) -> None:
        self.logs = logs
        self.marks: dict[str, int] = {}

    def mark(self) -> None:
        """Note where each log ends now: what comes after was logged while stopping."""
        self.marks = {name: _size_of(path) for name, path in self.logs.items()}

    def findings(self) -> dict[str, dict[str, Any]]:
        """Warnings and errors each daemon logged (they run at log level warning), during the load
        and while stopping."""
        findings = {}
        for name, path in self.logs.items():
            data = path.read_bytes() if path.exists() else b""
            mark = self.marks.get(name, len(data))
            findings[name] = {"during_load": log_levels(data[:mark].decode(errors="replace")),
                              "while_stopping": log_levels(data[mark:].decode(errors="replace"))}
        return findings


def log_levels(text: str) -> dict[str, Any]:
    """Lines per level in a daemon's log text, tracebacks, and the first few of those lines."""
    lines = text.splitlines()
    levels = Counter(match.group(1) for line in lines if (match := LOG_LEVEL.match(line)))
    tracebacks = sum(line.startswith(("Traceback", "  + Exception Group Traceback")) for line in lines)
    return {"lines": len(lines), "levels": dict(levels), "tracebacks": tracebacks,
            "first": [line[:300] for line in lines if LOG_LEVEL.match(line)][:5]}


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
