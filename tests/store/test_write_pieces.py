"""Gathered writes of received chunks (pwritev, no joined copy)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from swarmreg.store.blobstore import IOV_MAX, write_chunks, write_pieces
from tests.conftest import random_bytes


def test_pieces_land_in_order_at_the_offset_even_past_the_iovec_limit(tmp_path: Path) -> None:
    pieces = [bytes([i % 251]) * (1 + i % 7) for i in range(IOV_MAX * 2 + 5)] + [b"", b"end"]
    path = tmp_path / "file"
    path.write_bytes(b"head")
    fd = os.open(path, os.O_WRONLY)
    try:
        write_pieces(fd, pieces, 4)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + b"".join(pieces)


async def test_a_body_of_tiny_chunks_is_written_in_bounded_memory_and_order(tmp_path: Path) -> None:
    # A chunked upload of 1-byte chunks (a hostile client's) held a list entry and a memoryview
    # per byte until its batch was written, and the writes popped the list from its front
    # (quadratic, under the GIL): a 4 MiB batch cost about a GiB and stalled the daemon.
    count = 200_000
    large = random_bytes(100_000, seed=5)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"ab"[i % 2:i % 2 + 1]
            if i == count // 2:
                yield large

    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    tracemalloc.start()
    try:
        with trio.fail_after(30):
            written = await write_chunks(fd, chunks(), offset=0, chunk_size=1 << 20, hasher=hashlib.sha256())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        os.close(fd)
    half = b"ab" * (count // 4)
    expected = half + b"a" + large + half[1:]
    assert written == len(expected)
    assert path.read_bytes() == expected
    assert peak < 4 << 20, peak
