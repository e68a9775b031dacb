"""Streaming a file as a response body in large chunks, never the whole file in memory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol

import trio
from quart.wrappers.response import ResponseBody

from swarmreg.errors import INTERNAL, SwarmregError


class RangedBody(Protocol):
    """A response body whose byte range can be narrowed before it is sent."""

    start: int
    end: int

    def close(self) -> None: ...


class FileBody(ResponseBody):
    """Bytes [start, end) of an already open file descriptor, read with pread in a thread.

    The descriptor is opened before the response starts, so a blob deleted or
    replaced meanwhile still streams the content whose size the headers announced.
    The body owns the descriptor and closes it when the response ends.
    """

    def __init__(self, fd: int, start: int, end: int, chunk_size: int) -> None:
        self.fd = fd
        self.start = start
        self.end = end
        self.chunk_size = chunk_size

    @property
    def size(self) -> int:
        """How many bytes the body will send."""
        return self.end - self.start

    async def __aenter__(self) -> FileBody:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a response that was never sent still releases its file
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
