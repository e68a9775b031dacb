"""glibc's allocator, tuned for a daemon that streams blobs through worker threads.

Blob bodies are read with ``pread`` in trio's worker threads, ``store.chunk_size`` (4 MiB) at a
time, and freed on the main thread once sent; libtorrent's threads allocate disk and network
buffers. With glibc's defaults two things hold on to that memory:

- each thread that allocates gets an arena of its own (up to 8 per core), and freed chunks go
  back to their arena, where they stay mapped;
- a chunk above ``M_MMAP_THRESHOLD`` (128 KiB) is an mmap of its own, unmapped when freed; but
  the first such free raises the threshold to that chunk's size (up to 32 MiB), so every later
  4 MiB chunk comes from an arena instead and is rarely given back.

Under the registry load test (netsim.load, 2.5 minutes, two runs side by side) the agent reached
a peak RSS of 312 MiB and ended at 286 MiB with the defaults, and 186 and 117 MiB with two arenas
and a fixed threshold of 1 MiB (setting it turns the dynamic adjustment off). The herd still grew
with that threshold: the tracker's cache of small blobs (64 KiB - 1 MiB each, evicted in LRU
order), upload chunks and response bodies left holes in the arenas; with the threshold fixed at
glibc's own starting value, 128 KiB, each of those is an mmap of its own, and in two 4-minute runs
side by side the herd grew 1.7 MiB from minute 2 to the end instead of 9 MiB. A chunk of 128 KiB
or more costs an mmap, its page faults and a munmap: a few per cent of a core at the load test's
rate.

An operator's own ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES`` malloc
tunables win: what they set is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 128 << 10


def tune_malloc(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Set glibc's arena count and a fixed mmap threshold, unless the environment sets them;
    returns what was set (nothing on a C library that is not glibc). Call it before the daemon
    starts its threads."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return {}
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt does nothing)
        return {}
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    tunables = environ.get("GLIBC_TUNABLES", "")
    wanted = {"M_ARENA_MAX": (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
              "M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_",
                                   "glibc.malloc.mmap_threshold")}
    applied = {}
    for name, (param, value, variable, tunable) in wanted.items():
        if variable in environ or tunable in tunables:
            continue
        if mallopt(param, value) == 1:
            applied[name] = value
        else:
            log.warning("mallopt(%s, %d) failed", name, value)
    return applied
