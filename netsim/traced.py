"""Run a daemon under tracemalloc: ``python -m netsim.traced DIR python -m swarmreg daemon ...``.

A debugging aid for the load test's ``--tracemalloc`` (never for measuring: tracing slows the
daemon down and costs memory itself). The daemon runs in this same process (its pid is the one
netsim samples); each SIGUSR1 writes a snapshot of the Python heap to ``DIR/<n>.snapshot``, where
``netsim.memory.heap_growth`` compares them. RSS minus what tracemalloc traces is native memory
(libtorrent, glibc's arenas, OpenSSL).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 8  # of each allocation's traceback: enough to tell the caller of a shared helper


def main(argv: list[str]) -> None:
    """Start tracing, install the SIGUSR1 handler, and run ``-m swarmreg ...`` as __main__."""
    if len(argv) < 4 or argv[2] != "-m":
        raise SystemExit("usage: python -m netsim.traced DIR PYTHON -m MODULE [ARGS...]")
    directory, module, rest = Path(argv[0]), argv[3], argv[4:]
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    taken = [0]

    def dump(signum: int, frame: FrameType | None) -> None:
        taken[0] += 1
        temp = directory / f"{taken[0]}.tmp"
        tracemalloc.take_snapshot().dump(str(temp))
        os.replace(temp, directory / f"{taken[0]}.snapshot")

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
