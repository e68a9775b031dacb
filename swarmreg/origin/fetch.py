"""A blob from a storage backend into the store in one pass: written, checked against its
digest and hashed into its torrent's metainfo as the bytes arrive.

Receiving and hashing overlap: one task reads the backend's stream into batches of about the
store's chunk size (at most ``QUEUED`` batches wait), while the other hashes and writes each
batch in a worker thread (hashlib lets go of the GIL). The file is written under the store's
temp area and renamed under its digest only once the whole of it matches: nothing partial or
wrong is ever found under a digest, and nothing is left behind when the fetch fails.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterable, Callable, Mapping

import trio

from swarmreg.digest import Digest
from swarmreg.errors import BACKEND_ERROR, SwarmregError, os_error
from swarmreg.store.blobstore import BlobStore, write_all
from swarmreg.store.growing import GrowingFile
from swarmreg.swarm.metainfo import Metainfo, MetainfoBuilder

# Batches read ahead of the hashing and writing; with 4 MiB chunks, up to 8 MiB in memory.
QUEUED = 2
# The batch of a blob that readers follow as it grows (GrowingFile): small enough that the
# first bytes reach them soon after they arrive, even from a slow upstream.
GROWING_BATCH = 256 << 10


async def receive_blob(store: BlobStore, digest: Digest, size: int, chunks: AsyncIterable[bytes], *,
                       root_cert: bytes = b"", piece_lengths: Mapping[int, int] | None = None,
                       source: str = "the backend", growing: GrowingFile | None = None,
                       metainfo: bool = True) -> Metainfo | None:
    """Store ``chunks`` (``size`` bytes, as ``source`` announced) under ``digest``; returns
    the blob's metainfo (None for the empty blob, which has no torrent, or without ``metainfo``).

    ``growing`` is told of each batch written and of the install, for readers that stream the
    blob while it arrives (its failure is the caller's to tell).

    A stream longer or shorter than ``size`` is BACKEND_ERROR; one not matching the digest is
    DIGEST_INVALID; the stream's own errors pass through as they are.
    """
    builder = MetainfoBuilder(digest, size, root_cert, piece_lengths) if size and metainfo else None
    hasher = digest.hasher()
    temp = store.temp_path()
    try:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as error:
            raise os_error(error, "creating the blob's file") from None
        if growing is not None:
            growing.begin(temp, size)
        try:
            batch = store.chunk_size if growing is None else min(store.chunk_size, GROWING_BATCH)
            received = await _pump(chunks, size, batch, _Absorb(fd, hasher, builder), source,
                                   None if growing is None else growing.advance)
        finally:
            os.close(fd)
        if received != size:
            raise SwarmregError(BACKEND_ERROR, f"{source} sent {received} of the {size} bytes it announced",
                                {"digest": str(digest)})
        # The digest is checked (by install) before the torrent is made of these bytes.
        await store.install(temp, digest, hexdigest=hasher.hexdigest())
        if growing is not None:
            growing.finish(store.path(digest))
    finally:
        temp.unlink(missing_ok=True)
    return None if builder is None else await trio.to_thread.run_sync(builder.finish)


class _Absorb:
    """Hash a batch into the digest and the metainfo and write it at ``offset``; blocking."""

    def __init__(self, fd: int, hasher: hashlib._Hash, builder: MetainfoBuilder | None) -> None:
        self.fd, self.hasher, self.builder = fd, hasher, builder

    def __call__(self, data: bytes, offset: int) -> None:
        self.hasher.update(data)
        if self.builder is not None:
            self.builder.update(data)
        try:
            write_all(self.fd, data, offset)
        except OSError as error:  # a full disk (STORAGE_FULL) or EIO: this node's, not the backend's
            raise os_error(error, "writing the blob") from None


async def _pump(chunks: AsyncIterable[bytes], size: int, batch: int, absorb: _Absorb, source: str,
                advance: Callable[[int], None] | None = None) -> int:
    """Read ``chunks`` in one task while ``absorb`` takes the batches in a thread; the bytes taken."""
    send, receive = trio.open_memory_channel[bytes](QUEUED)
    failures: list[BaseException] = []  # raised after the nursery, which would wrap them in a group
    received = 0

    async def read() -> None:
        nonlocal received
        pending: list[bytes] = []
        pending_size = 0
        async with send:
            try:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise SwarmregError(BACKEND_ERROR, f"{source} sent more than the {size} bytes "
                                            "it announced")
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= batch:
                        await send.send(b"".join(pending))
                        pending, pending_size = [], 0
                if pending:
                    await send.send(b"".join(pending))
            except Exception as error:
                failures.append(error)

    written = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        try:
            async with receive:
                async for data in receive:
                    await trio.to_thread.run_sync(absorb, data, written)
                    written += len(data)
                    if advance is not None:
                        advance(written)
        except Exception as error:
            failures.append(error)
            nursery.cancel_scope.cancel()  # stop reading from the backend
    if failures:
        raise failures[0]
    return written
