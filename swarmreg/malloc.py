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
side by side the herd grew 1.7 MiB from minute 2 to the end instead of 9 MiB. The threshold is now
64 KiB: chunks of 64-128 KiB (most likely the 64 KiB buffers trio's sockets receive into, just
over 64 KiB with their object header) were what kept the herd's main heap growing, 25 -> 43 MiB over a 10-minute
run even with the periodic trim below; at 64 KiB it stayed at 16-19 MiB over 4.5 minutes
(docs/benchmarks.md). A chunk at the threshold or above costs an mmap, its page faults and a
munmap: a few per cent of a core at the load test's rate.

An operator's own ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES`` malloc
tunables win: what they set is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 64 << 10


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


def malloc_trimmer() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a callable (1 if it gave memory back), None on a C library
    without it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return lambda: int(trim(0))


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


async def trim_periodically(interval: float, trim: Callable[[], object] | None = None) -> None:
    """Every ``interval`` seconds give the free pages inside glibc's heaps back to the kernel
    (``malloc_trim(0)``), until cancelled; nothing where ``interval`` is 0 or the C library has
    no ``malloc_trim``. A failed trim is logged and the next one tried: this never stops the daemon.

    Why: chunks below the mmap threshold come from the arenas, and a long-lived one among freed
    ones keeps their pages resident; glibc only gives back the top of the main heap by itself.
    Under the registry load test the herd's main heap held 54 MB for 21 MB in use after 3 minutes,
    and one ``malloc_trim(0)`` took its RSS from 145 to 116 MiB (docs/benchmarks.md)."""
    if interval <= 0:
        return
    if trim is None and (trim := malloc_trimmer()) is None:
        log.info("malloc_trim: not available in this C library; heaps are not trimmed")
        return
    while True:
        await trio.sleep(interval)
        before = _rss_kib()
        try:
            # In a worker thread: it walks every arena under its lock, milliseconds on a busy heap.
            await trio.to_thread.run_sync(trim)
        except Exception as error:  # noqa: BLE001 - whatever libc or ctypes raise, the daemon goes on
            log.warning("malloc_trim failed: %s: %s", type(error).__name__, error)
            continue
        log.debug("malloc_trim: RSS %d -> %d KiB", before, _rss_kib())
