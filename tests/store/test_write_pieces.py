"""Gathered writes of received chunks (pwritev, no joined copy)."""

from __future__ import annotations

import os
from pathlib import Path

from swarmreg.store.blobstore import IOV_MAX, write_pieces


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
