"""Chunked upload sessions that survive restarts and commit atomically into the blob store.

Each session is a directory ``uploads/<uid>/`` (see swarmreg.layout) holding the
bytes written at their offsets and the byte ranges received so far. A chunk's
range is recorded only after all of its bytes are written, so a process killed
mid-chunk leaves a session that simply lacks that chunk. Chunks may arrive in
any order; a chunk that overlaps received (or in-flight) bytes is refused.

Sessions are bounded: at most ``max_sessions`` open in all and ``max_per_namespace`` in one
namespace (429 TOOMANYREQUESTS past either), and a session idle for ``ttl`` seconds is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import cattrs
import trio

from swarmreg.digest import Digest
from swarmreg.errors import (
    BLOB_UPLOAD_INVALID,
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    RANGE_INVALID,
    SIZE_INVALID,
    STORAGE_FULL,
    TOO_LARGE,
    TOOMANYREQUESTS,
    SwarmregError,
    log_failure,
    os_error,
)
from swarmreg.layout import UPLOAD_DATA, UPLOAD_META, upload_dir
from swarmreg.origin.wire import UPLOAD_ID
from swarmreg.store.blobstore import BlobStore, hash_file, write_chunks
from swarmreg.store.files import ByteRange

log = logging.getLogger(__name__)

_converter = cattrs.Converter(forbid_extra_keys=True)

# What a client told "too many upload sessions" waits before it tries again: sessions free up
# as pushes commit, and abandoned ones within the TTL.
RETRY_AFTER = 30


@attrs.frozen
class UploadMeta:
    """What a session persists: enough to resume or commit it after a restart."""

    uid: str
    namespace: str
    digest: str | None  # known up front for Kraken's origin API, only at commit for Docker's
    created: float
    updated: float
    # Received byte ranges [start, end), sorted and coalesced.
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def size(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def missing(self) -> list[tuple[int, int]]:
        """The gaps before and between received ranges."""
        gaps, position = [], 0
        for start, end in self.ranges:
            if start > position:
                gaps.append((position, start))
            position = end
        return gaps


def _add_range(ranges: tuple[tuple[int, int], ...], new: ByteRange) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted([*ranges, (new.start, new.end)]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _overlaps(a: tuple[int, int] | ByteRange, b: ByteRange) -> bool:
    start, end = (a.start, a.end) if isinstance(a, ByteRange) else a
    return start < b.end and b.start < end


@attrs.define(eq=False)
class Upload:
    """One open upload session."""

    meta: UploadMeta
    dir: Path
    # Ranges being written right now; nothing else may touch them.
    in_flight: list[ByteRange] = attrs.field(factory=list)
    # sha256 of the bytes [0, hashed_upto), fed while in-order chunks are written,
    # so a sequential upload commits without reading its file again.
    hasher: hashlib._Hash = attrs.field(factory=hashlib.sha256)
    hashed_upto: int = 0
    committing: bool = False
    # Cancelled (DELETE) while chunks were being written: they stop and record nothing.
    cancelled: bool = False

    @property
    def uid(self) -> str:
        return self.meta.uid

    @property
    def data_path(self) -> Path:
        return self.dir / UPLOAD_DATA


class UploadManager:
    """Creates, writes, commits and expires upload sessions under ``root``."""

    def __init__(self, root: Path, store: BlobStore, *, ttl: float, max_size: int,
                 max_sessions: int | None = None, max_per_namespace: int | None = None) -> None:
        """``root`` is the data directory's ``uploads/`` (swarmreg.layout); ``max_sessions`` and
        ``max_per_namespace`` bound the open sessions (None: unbounded)."""
        self.root = Path(root)
        self.store = store
        self.ttl = ttl
        self.max_size = max_size
        self.max_sessions = max_sessions
        self.max_per_namespace = max_per_namespace
        self._uploads: dict[str, Upload] = {}
        self._per_namespace: Counter[str] = Counter()

    def load(self) -> None:
        """Pick up the sessions a previous process left; drop broken and expired ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for entry in self.root.iterdir():
            meta = self._read_meta(entry)
            if meta is None or meta.updated + self.ttl < now:
                log.info("removing %s upload session %s", "expired" if meta else "broken", entry.name)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                continue
            self._add(Upload(meta, entry))
        if self._uploads:
            log.info("resumed %d upload session(s)", len(self._uploads))

    @staticmethod
    def _read_meta(entry: Path) -> UploadMeta | None:
        if not UPLOAD_ID.fullmatch(entry.name) or not (entry / UPLOAD_DATA).is_file():
            return None
        try:
            meta = _converter.structure(json.loads((entry / UPLOAD_META).read_bytes()), UploadMeta)
        except (OSError, ValueError, cattrs.BaseValidationError):
            return None
        return meta if meta.uid == entry.name else None

    @staticmethod
    def _write_meta(upload: Upload, meta: UploadMeta) -> None:
        """Persist ``meta`` as the session's (replacing the old whole), then adopt it in memory.

        On a failure (a full disk) neither the file nor ``upload.meta`` changes: the session on
        disk and in memory keep agreeing, as if the chunk was never sent.
        """
        temp = upload.dir / f"{UPLOAD_META}.tmp"
        try:
            temp.write_text(json.dumps(_converter.unstructure(meta)))
            os.replace(temp, upload.dir / UPLOAD_META)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise os_error(error, "recording the upload") from None
        upload.meta = meta

    def __len__(self) -> int:
        return len(self._uploads)

    def _add(self, upload: Upload) -> None:
        self._uploads[upload.uid] = upload
        self._per_namespace[upload.meta.namespace] += 1

    def _check_room(self, namespace: str) -> None:
        """TOOMANYREQUESTS (with Retry-After) when one more session would pass a limit."""
        if self.max_sessions is not None and len(self._uploads) >= self.max_sessions:
            scope, limit = "in all", self.max_sessions
        elif self.max_per_namespace is not None and self._per_namespace[namespace] >= self.max_per_namespace:
            scope, limit = "in this namespace", self.max_per_namespace
        else:
            return
        log.warning("refused an upload session in %s: %d open %s", namespace, limit, scope)
        raise SwarmregError(TOOMANYREQUESTS, f"too many open upload sessions {scope}; "
                            "finish or cancel one, or retry later", {"limit": limit},
                            headers={"Retry-After": str(RETRY_AFTER)})

    async def create(self, namespace: str, digest: Digest | None = None) -> Upload:
        """Open a new session for a blob in ``namespace`` (of ``digest``, when known now);
        TOOMANYREQUESTS when the open sessions are at a limit."""
        self._check_room(namespace)
        uid = str(uuid.uuid4())
        now = time.time()
        meta = UploadMeta(uid, namespace, None if digest is None else str(digest), now, now)
        upload = Upload(meta, upload_dir(self.root, uid))
        try:
            upload.dir.mkdir(parents=True)
            upload.data_path.touch()
            self._write_meta(upload, meta)
        except (OSError, SwarmregError) as error:  # a full disk: no half-made session stays
            shutil.rmtree(upload.dir, ignore_errors=True)
            if isinstance(error, OSError):
                raise os_error(error, "opening the upload session") from None
            raise
        self._add(upload)
        return upload

    def get(self, uid: str, namespace: str, digest: Digest | None = None) -> Upload:
        """The open session ``uid`` of this namespace (and digest, if it was opened for one),
        else BLOB_UPLOAD_UNKNOWN."""
        upload = self._uploads.get(uid) if UPLOAD_ID.fullmatch(uid) else None
        if (upload is None or upload.meta.namespace != namespace
                or (digest is not None and upload.meta.digest != str(digest))):
            raise SwarmregError(BLOB_UPLOAD_UNKNOWN, detail={"uid": uid[:100]})
        return upload

    async def write(self, upload: Upload, where: ByteRange | None, chunks: AsyncIterable[bytes]) -> ByteRange:
        """Write the body ``chunks`` to bytes ``where`` of the upload, or append them (``None``).

        Refused before anything is written when the range overlaps bytes already
        received or in flight, or an append would leave a gap (416), or the size
        limit is passed (413). A body whose length differs from its range raises
        SIZE_INVALID, and then (as on any error or cancellation) nothing is
        recorded, as if the chunk was never sent. Returns the range recorded.
        """
        if upload.committing:
            raise SwarmregError(BLOB_UPLOAD_INVALID, "upload is being committed")
        appending = where is None
        if where is None:
            if upload.in_flight or upload.meta.missing():
                raise SwarmregError(RANGE_INVALID, "chunks must arrive in order",
                                    {"received": [list(r) for r in upload.meta.ranges]})
            where = ByteRange(upload.meta.size, self.max_size)  # reserves everything after the end
        if where.end > self.max_size:
            raise SwarmregError(TOO_LARGE, f"uploads are limited to {self.max_size} bytes",
                                {"limit": self.max_size})
        taken: list[tuple[int, int] | ByteRange] = [*upload.meta.ranges, *upload.in_flight]
        if any(_overlaps(r, where) for r in taken):
            raise SwarmregError(
                RANGE_INVALID, "chunk overlaps bytes already uploaded",
                {"chunk": [where.start, where.end], "received": [list(r) for r in upload.meta.ranges]})
        upload.in_flight.append(where)
        in_order = where.start == upload.hashed_upto
        hasher = upload.hasher.copy() if in_order else None
        try:
            written = await self._write_body(upload, where, _until_cancelled(upload, chunks), hasher,
                                             exact=not appending)
            _check_not_cancelled(upload)
            recorded = ByteRange(where.start, where.start + written)
            if written:
                self._write_meta(upload, attrs.evolve(
                    upload.meta, ranges=_add_range(upload.meta.ranges, recorded), updated=time.time()))
                if hasher is not None and upload.hashed_upto == where.start:
                    upload.hasher, upload.hashed_upto = hasher, recorded.end
            return recorded
        except SwarmregError as error:
            if error.code is STORAGE_FULL:
                self._trim(upload, where)
            raise
        finally:
            upload.in_flight.remove(where)

    @staticmethod
    def _trim(upload: Upload, failed: ByteRange) -> None:
        """Give back the space a chunk that failed on a full disk took, when nothing else is
        being written: the bytes past the last recorded range belong to no chunk."""
        if upload.in_flight != [failed]:
            return
        try:
            os.truncate(upload.data_path, upload.meta.size)
        except OSError:
            log.warning("upload %s: cannot trim its unrecorded bytes", upload.uid)

    async def _write_body(self, upload: Upload, where: ByteRange, chunks: AsyncIterable[bytes],
                          hasher: hashlib._Hash | None, *, exact: bool) -> int:
        try:
            fd = os.open(upload.data_path, os.O_WRONLY)
        except FileNotFoundError:  # the session was removed under us
            raise _cancelled_error(upload) from None
        try:
            written = await write_chunks(fd, chunks, offset=where.start, limit=where.length,
                                         hasher=hasher, chunk_size=self.store.chunk_size)
        except SwarmregError as error:
            if error.code is SIZE_INVALID and not exact:
                raise SwarmregError(TOO_LARGE, f"uploads are limited to {self.max_size} bytes",
                                    {"limit": self.max_size}) from None
            raise
        finally:
            os.close(fd)
        if exact and written != where.length:
            raise SwarmregError(SIZE_INVALID, "body is shorter than its Content-Range",
                                {"chunk": [where.start, where.end], "received": written})
        return written

    async def commit(self, upload: Upload, digest: Digest,
                     deliver: Callable[[Path, str], Awaitable[None]] | None = None) -> int:
        """Verify the session's bytes against ``digest`` and deliver them; returns the size.

        ``deliver(path, hexdigest)`` puts the verified file where it belongs; by
        default it is moved into the blob store (shielded: whole or not at all).
        Gaps or chunks still in flight refuse the commit and keep the session; a
        digest mismatch discards the session; a failed delivery keeps it for a retry.
        """
        if upload.in_flight or upload.committing:
            raise SwarmregError(BLOB_UPLOAD_INVALID, "chunks of this upload are still being written")
        if missing := upload.meta.missing():
            raise SwarmregError(RANGE_INVALID, "upload has gaps", {"missing": [list(g) for g in missing]})
        if upload.meta.digest is not None and upload.meta.digest != str(digest):
            raise SwarmregError(DIGEST_INVALID, "the upload was opened for another digest")
        size = upload.meta.size
        upload.committing = True
        try:
            hexdigest = await trio.to_thread.run_sync(self._finish_hash, upload, size)
            if hexdigest != digest.hex:
                self._remove(upload)
                raise SwarmregError(DIGEST_INVALID, "content does not match digest",
                                    {"digest": str(digest), "actual": f"sha256:{hexdigest}"})
            if deliver is None:
                # A full disk may refuse the move (STORAGE_FULL): the session stays for a retry.
                with trio.CancelScope(shield=True):
                    await self.store.install(upload.data_path, digest, hexdigest=hexdigest)
            else:
                await deliver(upload.data_path, hexdigest)
        finally:
            upload.committing = False
        self._remove(upload)
        return size

    def _finish_hash(self, upload: Upload, size: int) -> str:
        # Bytes past the last recorded range belong to a chunk that never finished.
        os.truncate(upload.data_path, size)
        if upload.hashed_upto == size:
            return upload.hasher.hexdigest()
        return hash_file(upload.data_path, self.store.chunk_size, upload.hasher.copy(), upload.hashed_upto)

    async def cancel(self, upload: Upload) -> None:
        """Drop the session and its bytes; chunks being written stop with BLOB_UPLOAD_UNKNOWN."""
        if upload.committing:
            raise SwarmregError(BLOB_UPLOAD_INVALID, "upload is being committed")
        upload.cancelled = True
        self._remove(upload)

    def _remove(self, upload: Upload) -> None:
        if self._uploads.pop(upload.uid, None) is not None:
            self._per_namespace[upload.meta.namespace] -= 1
            if not self._per_namespace[upload.meta.namespace]:
                del self._per_namespace[upload.meta.namespace]
        shutil.rmtree(upload.dir, ignore_errors=True)

    async def expire_until(self, stop: trio.Event) -> None:
        """Remove expired sessions every quarter TTL (at most every 5 minutes) until ``stop``."""
        while not stop.is_set():
            with trio.move_on_after(min(self.ttl / 4, 300.0)):
                await stop.wait()
            try:
                self.expire()
            except Exception as error:  # background work: the next round tries again
                log_failure(log, "expiring upload sessions", error)

    def expire(self, now: float | None = None) -> int:
        """Remove idle sessions older than the TTL; returns how many went."""
        now = time.time() if now is None else now
        stale = [u for u in self._uploads.values()
                 if not u.in_flight and not u.committing and u.meta.updated + self.ttl < now]
        for upload in stale:
            log.info("upload %s expired", upload.uid)
            self._remove(upload)
        return len(stale)


def _cancelled_error(upload: Upload) -> SwarmregError:
    return SwarmregError(BLOB_UPLOAD_UNKNOWN, "the upload was cancelled while this chunk was written",
                         {"uid": upload.uid})


def _check_not_cancelled(upload: Upload) -> None:
    if upload.cancelled:
        raise _cancelled_error(upload)


async def _until_cancelled(upload: Upload, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, stopping (BLOB_UPLOAD_UNKNOWN) as soon as the session is cancelled, so a
    DELETE during a PATCH does not leave the PATCH writing into a removed file."""
    async for chunk in chunks:
        _check_not_cancelled(upload)
        yield chunk
