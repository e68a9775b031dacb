"""The content-addressed blob store every role keeps its blobs in.

Its tree (``blobs/<alg>/<xx>/<hex>`` and ``tmp/``) is described in swarmreg.layout.
A blob only ever appears under its digest by an atomic rename of a file whose hash
(of the digest's algorithm, sha256 or sha512) was checked first, so no reader, crash
or concurrent writer can see a partial or wrong blob under a digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, Iterator
from pathlib import Path

import trio

from swarmreg.digest import ALGORITHMS, Digest
from swarmreg.errors import DIGEST_INVALID, SIZE_INVALID, SwarmregError, os_error
from swarmreg.layout import BlobTree
from swarmreg.store.files import FileBody
from swarmreg.store.locks import DigestLocks

log = logging.getLogger(__name__)


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path, chunk_size: int, hasher: hashlib._Hash | None = None, start: int = 0) -> str:
    """Finish ``hasher`` (a fresh sha256 when None) over ``path`` from offset ``start``; blocking."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb", buffering=0) as file:
        file.seek(start)
        buffer = bytearray(chunk_size)
        view = memoryview(buffer)
        while n := file.readinto(buffer):
            hasher.update(view[:n])
    return hasher.hexdigest()


class BlobStore:
    """Committed blobs by digest, plus a temp area on the same filesystem for writes."""

    def __init__(self, root: Path, *, fsync: bool = True, chunk_size: int = 4 << 20) -> None:
        self.tree = BlobTree(root)
        self.fsync = fsync
        self.chunk_size = chunk_size
        # Held by the commit paths that put a blob in place and by the garbage collector
        # that removes it (swarmreg.store.locks): the callers take it, not the store.
        self.locks = DigestLocks()

    @property
    def root(self) -> Path:
        return self.tree.root

    @property
    def blobs_dir(self) -> Path:
        return self.tree.blobs

    @property
    def tmp_dir(self) -> Path:
        return self.tree.tmp

    def prepare(self) -> None:
        """Create the layout and remove temp files a previous process left behind."""
        for algorithm in ALGORITHMS:
            self.tree.algorithm_dir(algorithm).mkdir(parents=True, exist_ok=True)
        if self.tmp_dir.exists():
            stale = list(self.tmp_dir.iterdir())
            if stale:
                log.info("removing %d stale temp file(s) from %s", len(stale), self.tmp_dir)
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir()

    def path(self, digest: Digest) -> Path:
        return self.tree.blob(digest)

    def size(self, digest: Digest) -> int | None:
        """The blob's size, or None when the store does not hold it."""
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            return None

    def __contains__(self, digest: Digest) -> bool:
        return self.size(digest) is not None

    def digests(self) -> Iterator[Digest]:
        """Every committed blob's digest (a directory scan; blocking)."""
        for algorithm in ALGORITHMS:
            directory = self.tree.algorithm_dir(algorithm)
            if not directory.is_dir():
                continue
            for shard in sorted(directory.iterdir()):
                for entry in sorted(shard.iterdir()):
                    yield Digest(entry.name, algorithm)

    def open_body(self, digest: Digest, start: int = 0, end: int | None = None) -> tuple[FileBody, int] | None:
        """Open the blob for streaming bytes [start, end); returns the body and the blob's size.

        None when the store does not hold the blob.
        """
        try:
            fd = os.open(self.path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return None
        size = os.fstat(fd).st_size
        return FileBody(fd, start, size if end is None else end, self.chunk_size), size

    def temp_path(self) -> Path:
        """A fresh path in the temp area, on the blob directory's filesystem."""
        return self.tmp_dir / uuid.uuid4().hex

    async def install(self, source: Path, digest: Digest, *, hexdigest: str | None = None) -> None:
        """Move the file ``source`` under ``digest`` once its hash (of the digest's algorithm) matches.

        ``hexdigest`` is the caller's own hash of the file's content with the digest's
        algorithm, when it hashed the bytes while writing them; otherwise the file is hashed here. On a
        mismatch ``source`` is removed and DIGEST_INVALID raised. The rename
        itself is shielded from cancellation: it happens whole or not at all.
        """
        if hexdigest is None:
            hexdigest = await trio.to_thread.run_sync(hash_file, source, self.chunk_size, digest.hasher())
        if hexdigest != digest.hex:
            source.unlink(missing_ok=True)
            raise SwarmregError(
                DIGEST_INVALID, "content does not match digest",
                {"digest": str(digest), "actual": f"{digest.algorithm}:{hexdigest}"})
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self.rename_into_place, source, digest)
            except OSError as error:  # a full disk may refuse the shard's directory entry
                raise os_error(error, "moving the blob into the store") from None

    def make_shard(self, digest: Digest) -> Path:
        """The blob's shard directory, created if new; blocking.

        With ``fsync``, a new shard is fsynced in its parent: otherwise a crash could
        lose the directory, and with it a blob whose own rename was made durable.
        """
        shard = self.path(digest).parent
        try:
            shard.mkdir()
        except FileExistsError:
            return shard
        if self.fsync:
            fsync_path(shard.parent, directory=True)
        return shard

    def rename_into_place(self, source: Path, digest: Digest) -> None:
        """Move a file known to hold ``digest``'s content under it (fsynced first); blocking."""
        target = self.path(digest)
        self.make_shard(digest)
        if self.fsync:
            fsync_path(source)
        # Concurrent writers of one digest each rename identical content; the last wins atomically.
        os.replace(source, target)
        # Committed now, whenever its bytes were written: the garbage collector's grace period
        # counts from the last commit (docs/gc.md).
        os.utime(target)
        if self.fsync:
            fsync_path(target.parent, directory=True)

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream ``chunks`` under ``digest``, checking its hash; returns the size."""
        temp = self.temp_path()
        hasher = digest.hasher()
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as error:
                raise os_error(error, "creating the blob's file") from None
            try:
                size = await write_chunks(fd, chunks, offset=0, hasher=hasher, chunk_size=self.chunk_size)
            finally:
                os.close(fd)
            await self.install(temp, digest, hexdigest=hasher.hexdigest())
        finally:
            temp.unlink(missing_ok=True)
        return size

    def touch(self, digest: Digest) -> bool:
        """Renew the blob's modification time (a commit of content it holds already); False when
        the store does not hold it. Blocking; the caller holds the digest's lock."""
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def stat(self, digest: Digest) -> os.stat_result | None:
        """The blob's file status (its size, and when it was last committed: st_mtime), or None."""
        try:
            return os.stat(self.path(digest))
        except FileNotFoundError:
            return None

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; False when the store did not hold it. A reader that opened it keeps
        reading: the inode lives until its last descriptor closes."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` to ``fd`` at ``offset``; blocking."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# The most buffers one pwritev(2) takes (Linux's UIO_MAXIOV).
IOV_MAX = 1024
# Received chunks shorter than this are gathered into one buffer before they are written.
SMALL_CHUNK = 64 << 10


def write_pieces(fd: int, pieces: list[bytes | bytearray], offset: int) -> None:
    """Write ``pieces`` one after another to ``fd`` from ``offset``, gathered by pwritev rather
    than joined into one buffer first (a copy of every byte); blocking. Linear in the pieces:
    a view is made only for the IOV_MAX pieces of each call, and written ones are skipped by index."""
    first = 0
    head: memoryview | None = None  # the rest of pieces[first] when a write ended inside it
    while first < len(pieces):
        views = [head if head is not None else memoryview(pieces[first]),
                 *(memoryview(piece) for piece in pieces[first + 1:first + IOV_MAX])]
        written = os.pwritev(fd, views, offset)
        offset += written
        head = None
        for view in views:
            if written < len(view):
                head = view[written:]
                break
            written -= len(view)
            first += 1


def _hash_and_write(fd: int, hasher: hashlib._Hash | None, pieces: list[bytes | bytearray], offset: int) -> None:
    if hasher is not None:
        for piece in pieces:  # hashlib lets go of the GIL for each large piece
            hasher.update(piece)
    write_pieces(fd, pieces, offset)


async def _write_pieces(fd: int, hasher: hashlib._Hash | None, pieces: list[bytes | bytearray], offset: int) -> None:
    try:
        await trio.to_thread.run_sync(_hash_and_write, fd, hasher, pieces, offset)
    except OSError as error:  # ENOSPC, EDQUOT (STORAGE_FULL) or EIO: the write failed, not the client
        raise os_error(error, "writing the blob") from None


async def write_chunks(fd: int, chunks: AsyncIterable[bytes], *, offset: int, chunk_size: int,
                       hasher: hashlib._Hash | None = None, limit: int | None = None) -> int:
    """Write ``chunks`` to ``fd`` from ``offset`` in writes of about ``chunk_size``.

    Feeds ``hasher`` on the way. More than ``limit`` bytes raise SIZE_INVALID; a failed
    write (a full disk: STORAGE_FULL) raises the SwarmregError of swarmreg.errors.os_error,
    while errors of ``chunks`` itself pass through as they are. Returns the number of bytes
    written.
    """
    written, pending_size = 0, 0
    pending: list[bytes | bytearray] = []
    # Small chunks are copied into one buffer (a hostile or chunked client's tiny pieces would
    # each cost a list entry, a memoryview and an iovec: hundreds of bytes for one byte of body).
    tail = bytearray()
    async for chunk in chunks:
        if len(chunk) < SMALL_CHUNK:
            tail += chunk
            if len(tail) >= SMALL_CHUNK:
                pending.append(tail)
                tail = bytearray()
        else:
            if tail:
                pending.append(tail)
                tail = bytearray()
            pending.append(chunk)
        pending_size += len(chunk)
        if limit is not None and written + pending_size > limit:
            raise SwarmregError(SIZE_INVALID, "body is longer than its Content-Range", {"limit": limit})
        if pending_size >= chunk_size:
            if tail:
                pending.append(tail)
                tail = bytearray()
            await _write_pieces(fd, hasher, pending, offset + written)
            written, pending, pending_size = written + pending_size, [], 0
    if tail:
        pending.append(tail)
    if pending:
        await _write_pieces(fd, hasher, pending, offset + written)
        written += pending_size
    return written
