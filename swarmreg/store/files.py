"""Framework-free file primitives: byte ranges, and blob bodies streamed from an open file.

A body here is anything with ``start``/``end`` (the bytes it will send, narrowed
before sending for a ranged answer), async iteration over its chunks and
``aclose``; ``swarmreg.http.body`` adapts one to Quart. No web framework is
imported here, so the store, the backends and the clients load without one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Protocol

import attrs
import trio

from swarmreg.errors import INTERNAL, SwarmregError


@attrs.frozen
class ByteRange:
    """The half-open byte interval [start, end)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        """The RFC 9110 ``Content-Range`` value (inclusive end) for a 206 response."""
        return f"bytes {self.start}-{self.end - 1}/{size}"


class Body(Protocol):
    """Bytes [start, end) of a blob, streamed as chunks; ``aclose`` releases what it holds."""

    start: int
    end: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class ChunkedRange:
    """Bytes [start, end) of a blob, sent in chunks of about ``chunk_size``: what bodies share."""

    def __init__(self, start: int, end: int, chunk_size: int) -> None:
        self.start = start
        self.end = end
        self.chunk_size = chunk_size

    @property
    def size(self) -> int:
        """How many bytes the body will send."""
        return self.end - self.start


class FileBody(ChunkedRange):
    """Bytes [start, end) of an already open file descriptor, read with pread in a thread.

    The descriptor is opened before the response starts, so a blob deleted or
    replaced meanwhile still streams the content whose size the headers announced.
    The body owns the descriptor and closes it when it is closed (or collected).
    """

    def __init__(self, fd: int, start: int, end: int, chunk_size: int) -> None:
        super().__init__(start, end, chunk_size)
        self.fd = fd

    async def __aenter__(self) -> FileBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a body that was never sent still releases its file
        self.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        offset = self.start
        while offset < self.end:
            data = await trio.to_thread.run_sync(
                os.pread, self.fd, min(self.chunk_size, self.end - offset), offset)
            if not data:
                raise SwarmregError(INTERNAL, "file shrank while it was being sent")
            offset += len(data)
            yield data
