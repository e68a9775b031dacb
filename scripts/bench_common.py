"""What every benchmark script ends with: run it, print its table, keep its figures."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio


def run_and_report(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
                   report: Callable[[dict[str, Any]], None]) -> None:
    """Parse the command line (which must have ``--json``), run ``main`` under Trio, print its
    report, and write every figure to the ``--json`` file if one was given."""
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    report(outcome)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(outcome, indent=2))
