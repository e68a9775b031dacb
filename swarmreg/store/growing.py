"""A blob file still being written and verified, and bodies that follow it as it grows.

The writer (``swarmreg.origin.fetch.receive_blob``) announces the size, then each batch it
wrote, then that the whole file matched its digest and is installed under it (or that it
failed). Readers stream what is written so far, wait for more, and send the last byte of
their body only once the blob is verified: a body that completes holds bytes of the blob
under its digest, and a failed fetch cuts every body that follows it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from swarmreg.errors import UNAVAILABLE, SwarmregError
from swarmreg.store.files import FileBody


class GrowingFile:
    """One blob on its way into the store: how much of it is written, and how it ended."""

    def __init__(self) -> None:
        self.path: Path | None = None  # the temp file while it grows; the blob's path once verified
        self.size = 0
        self.written = 0  # bytes [0, written) are in the file
        self.verified = False  # the whole blob matched its digest and is held under it
        self.error: SwarmregError | None = None
        self.started = trio.Event()  # the size is known (or the fetch failed before)
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def begin(self, path: Path, size: int) -> None:
        """The writer created ``path`` for ``size`` bytes."""
        self.path, self.size = path, size
        self.started.set()
        self._notify()

    def advance(self, written: int) -> None:
        """Bytes [0, written) are in the file."""
        self.written = written
        self._notify()

    def finish(self, path: Path) -> None:
        """The blob matched its digest and is held at ``path``: every byte may go out."""
        self.path, self.written, self.verified = path, self.size, True
        self.started.set()
        self._notify()

    def fail(self, error: SwarmregError) -> None:
        """The fetch failed: bodies that follow it are cut. A verified blob stays verified."""
        if self.verified:
            return
        self.error = error
        self.started.set()
        self._notify()

    async def changed(self) -> None:
        """Wait for the next change (more bytes, the end)."""
        await self._changed.wait()

    async def body(self, start: int, end: int, chunk_size: int) -> GrowingBody:
        """A body for bytes [start, end), once its first byte is written, its file opened now
        (it survives the rename into the store, and a failed fetch's unlink: the body then fails
        on the error, not the file).

        A fetch that fails before then is the caller's error to answer, not a response cut after
        its headers; so is one whose every byte is written but not yet verified (the check is
        a moment away: a blob that came in one batch is answered whole or as an error).
        """
        while True:
            if self.error is not None:
                raise self.error
            if self.path is None:
                raise SwarmregError(UNAVAILABLE, "the blob's fetch has not started")
            if not self.verified and (self.written <= start or self.written >= self.size):
                await self.changed()
                continue
            path = self.path
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                # Renamed into the store (or unlinked on failure) as we looked: try the new state.
                if self.path == path:
                    await self.changed()
                continue
            return GrowingBody(self, fd, start, end, chunk_size)


class GrowingBody(FileBody):
    """Bytes [start, end) of a GrowingFile (a ``swarmreg.store.files.Body``), sent as they are
    written; the body's last byte only once the whole blob is verified."""

    def __init__(self, growing: GrowingFile, fd: int, start: int, end: int, chunk_size: int) -> None:
        super().__init__(fd, start, end, chunk_size)
        self.growing = growing

    async def _chunks(self) -> AsyncIterator[bytes]:
        growing = self.growing
        offset = self.start
        while offset < self.end:
            if growing.error is not None:
                raise growing.error
            # Held back until the blob is verified: the body's last byte, so that no body (a
            # range neither) completes with bytes that may not be the digest's, and the last
            # byte written, so that a source sending fewer bytes than it announced never hands
            # out all of them either (the body is then cut short of its Content-Length).
            limit = self.end if growing.verified else min(self.end - 1, growing.written - 1)
            if offset >= limit:
                await growing.changed()
                continue
            data = await trio.to_thread.run_sync(os.pread, self.fd, min(self.chunk_size, limit - offset), offset)
            if not data:
                raise SwarmregError(UNAVAILABLE, "the blob's file shrank while it was being sent")
            offset += len(data)
            yield data
