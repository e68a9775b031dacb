"""``swarmreg blob pull DIGEST --agent URL [-o FILE]``: a blob from an agent's blob API, verified
against its digest while it streams.

To a file, the bytes go to ``FILE.part`` (locked while a pull writes it), which becomes FILE only
once all of them are in and match the digest: nothing half-written ever sits under FILE. A pull
that stops (the agent died, the disk filled up, an interrupt) leaves the part; the same command
run again hashes what the part holds and asks for the rest (``Range: bytes=<size>-``). Bytes that
do not match the digest are removed. To standard output (no ``-o``, or ``-o -``) there is no
resume, and a mismatch can only be reported after the bytes went out.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from swarmreg.agent.client import AgentClient, BlobStream, RangeNotSatisfiable
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.transfer.common import USAGE, TransferError, hash_file, refused
from swarmreg.transfer.progress import human_size, meter


class Sink:
    """Where the bytes go: an open descriptor written at ``position``, and what it holds hashed."""

    def __init__(self, fd: int, hasher: hashlib._Hash, name: str) -> None:
        self.fd, self.hasher, self.name = fd, hasher, name
        self.position = 0

    def write(self, data: bytes) -> None:
        """All of ``data`` at the end; on a failure ``position`` counts only what was written."""
        view = memoryview(data)
        while view:
            written = self._write(view)
            self.hasher.update(view[:written])
            self.position += written
            view = view[written:]

    def _write(self, data: memoryview) -> int:
        return os.write(self.fd, data)

    def restart(self, hasher: hashlib._Hash) -> None:
        """Drop everything written (the agent sends the blob from its start)."""
        raise TransferError(f"the agent sent the blob from its start again: {self.name} cannot take it twice")


class PartFile(Sink):
    """``FILE.part``, written at offsets (a resume continues it); ``finish`` renames it to FILE."""

    def __init__(self, final: Path, digest: Digest) -> None:
        self.final = final
        self.part = final.with_name(final.name + ".part")
        if final.is_dir():
            raise TransferError(f"{final} is a directory: -o names the file to write", USAGE)
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise TransferError(f"cannot write {self.part}: {error.strerror}", USAGE) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TransferError(f"another pull is writing {self.part}") from None
        super().__init__(fd, digest.hasher(), str(self.part))
        self.position = os.fstat(fd).st_size
        if self.position:  # a resume: what the part holds counts towards the digest
            hash_file(fd, self.hasher, self.position, f"check {self.part.name}")
            print(f"resuming {self.part} at {human_size(self.position)}", file=sys.stderr)

    def _write(self, data: memoryview) -> int:
        return os.pwrite(self.fd, data, self.position)

    def restart(self, hasher: hashlib._Hash) -> None:
        os.ftruncate(self.fd, 0)
        self.hasher, self.position = hasher, 0

    def keep(self) -> None:
        """Cut the part to what was written whole (a failed write may have left a piece); an
        empty one goes."""
        try:
            os.ftruncate(self.fd, self.position)
            if not self.position:
                self.discard()
        except OSError:
            pass

    def finish(self) -> None:
        """The part, verified, becomes FILE (durably: synced, renamed, the directory synced)."""
        os.fsync(self.fd)
        os.replace(self.part, self.final)
        try:
            directory = os.open(self.final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            pass

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)

    def close(self) -> None:
        os.close(self.fd)


async def receive(agent: AgentClient, namespace: str, digest: Digest, sink: Sink) -> None:
    """Stream the blob (from ``sink.position``) into ``sink``; the digest is checked by the caller."""
    try:
        stream = await agent.open_blob(namespace, digest, sink.position)
    except RangeNotSatisfiable as error:
        if error.size == sink.position:
            return  # the part holds the whole blob already
        sink.restart(digest.hasher())  # a part longer than the blob is not of it
        stream = await agent.open_blob(namespace, digest, 0)
    try:
        if stream.start != sink.position:  # the agent ignored the range: take the blob whole
            sink.restart(digest.hasher())
        await _copy(stream, sink, digest)
    finally:
        await stream.response.aclose()


async def _copy(stream: BlobStream, sink: Sink, digest: Digest) -> None:
    size = stream.size
    progress = meter(f"pull {digest.hex[:12]}", size, sink.position)
    try:
        async for data in stream.response.aiter_raw():
            if size is not None and sink.position + len(data) > size:
                sink.write(data[:size - sink.position])
                raise TransferError(f"the agent sent more bytes than the blob's {size}")
            sink.write(data)
            progress.advance(len(data))
    except httpx.HTTPError as error:
        whole = f" of {human_size(size)}" if size is not None else ""
        raise TransferError(f"the agent stopped sending after {human_size(sink.position)}{whole} "
                            f"({type(error).__name__})") from None
    finally:
        progress.close()
    if size is not None and sink.position < size:
        raise TransferError(f"the agent ended the blob after {sink.position} of its {size} bytes")


def run_pull(digest_text: str, agent_url: str, connect: Callable[[], AgentClient], namespace: str,
             output: str | None) -> int:
    """The command: pull the blob into ``output`` (a path; None or ``-``: standard output)."""
    try:
        digest = Digest.parse(digest_text)
    except SwarmregError:
        raise TransferError(f"{digest_text!r} is not a digest (sha256:<64 hex digits> or sha512:<128>)",
                            USAGE) from None
    to_stdout = output in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise TransferError("a blob is not written to a terminal: name a file with -o, or redirect", USAGE)
    sink = (Sink(sys.stdout.fileno(), digest.hasher(), "standard output") if to_stdout
            else PartFile(Path(output or ""), digest))

    async def main() -> None:
        async with connect() as agent:
            await receive(agent, namespace, digest, sink)

    try:
        try:
            trio.run(main)
        except SwarmregError as error:
            if error.code is BLOB_UNKNOWN:
                raise TransferError(f"the agent at {agent_url} has no blob {digest} in namespace {namespace}") from None
            raise refused(error, "agent", agent_url) from None
        except OSError as error:
            raise _write_failed(error, sink) from None
        if sink.hasher.hexdigest() != digest.hex:
            actual = f"{digest.algorithm}:{sink.hasher.hexdigest()}"
            if isinstance(sink, PartFile):
                sink.discard()
                raise TransferError(f"digest mismatch: the agent sent {actual}; nothing was written to {sink.final}")
            raise TransferError(f"digest mismatch: the agent sent {actual}; the bytes on standard output are not "
                                f"{digest}")
        if isinstance(sink, PartFile):
            sink.finish()
    except BaseException:
        if isinstance(sink, PartFile):
            sink.keep()
        raise
    finally:
        if isinstance(sink, PartFile):
            sink.close()
    where = "standard output" if to_stdout else str(output)
    print(f"pulled {digest} ({human_size(sink.position)}) to {where}", file=sys.stderr)
    return 0


def _write_failed(error: OSError, sink: Sink) -> TransferError:
    if error.errno == errno.EPIPE:
        return TransferError(f"standard output was closed after {sink.position} bytes")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransferError(f"no space left writing {sink.name} after {human_size(sink.position)}: free some "
                             "and run the same command again to resume")
    return TransferError(f"cannot write {sink.name}: {error.strerror}")
