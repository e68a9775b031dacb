"""Blobs in an S3 bucket (or an S3-compatible server), through boto3 in worker threads.

Keys are content-addressed and shared by every namespace, laid out as the filesystem backend lays
out its files: ``<prefix>/blobs/<algorithm>/<hex[:2]>/<hex>`` (a layer pushed to many
repositories is stored once, and the garbage collector lists and deletes them as one set).

Uploads never hold more than a part in memory. A blob smaller than ``part_size`` is hashed
whole and then put with one PutObject, so a mismatch sends nothing. A larger one goes up as a
multipart upload, hashed part by part, and is completed only once the whole stream matched the
digest; any failure, cancellation or mismatch aborts it. S3 shows an object only once its upload
completes, so nothing half-written ever sits under a digest's key. Downloads are ranged GETs of
``part_size``, each read in chunks as the consumer asks for them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from swarmreg.backends.base import STREAM_CHUNK, Backend, GeneratedBlob
from swarmreg.backends.s3_bucket import ABORT_DEADLINE, MAX_PART_SIZE, NotFound, S3Bucket, S3Options
from swarmreg.digest import Digest
from swarmreg.errors import BACKEND_ERROR, BACKEND_UNAVAILABLE, DIGEST_INVALID, SwarmregError

log = logging.getLogger(__name__)

# S3 takes at most this many parts per upload. Parts grow by part_size every 1,000 of them, so
# an upload of unknown length may reach 55,000 part sizes (275 GiB at the smallest, 5 MiB).
MAX_PARTS = 10_000
PARTS_PER_STEP = 1_000

# Reads the next part of an upload: at least the size asked for, fewer only at the end.
ReadPart = Callable[[int], Awaitable[bytes | bytearray]]


class S3Backend(Backend):
    """Blobs in one bucket, under one prefix. Safe to share between tasks."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self.bucket = S3Bucket(options)
        self.root = f"{options.prefix}/blobs/" if options.prefix else "blobs/"

    @classmethod
    def from_options(cls, options: S3Options, _data_dir: Path) -> S3Backend:
        """The backend ``[[backends]] type = "s3"`` configures."""
        return cls(options)

    def key(self, digest: Digest) -> str:
        """The blob's key in the bucket."""
        return f"{self.root}{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    def describe(self, namespace: str) -> str:
        return f"S3 bucket {self.options.bucket}"

    async def _head(self, digest: Digest) -> dict[str, Any] | None:
        try:
            return await self.bucket.request("head_object", Key=self.key(digest))
        except NotFound:
            return None

    async def stat(self, namespace: str, digest: Digest) -> int | None:
        head = await self._head(digest)
        return None if head is None else int(head["ContentLength"])

    async def modified(self, namespace: str, digest: Digest) -> float | None:
        head = await self._head(digest)
        return None if head is None else float(head["LastModified"].timestamp())

    async def delete(self, namespace: str, digest: Digest) -> bool:
        if await self._head(digest) is None:
            return False
        await self.bucket.request("delete_object", Key=self.key(digest))
        return True

    async def list(self, namespace: str) -> AsyncIterator[Digest]:
        """Every blob under the prefix, a page (1,000 keys) per request; other keys are skipped."""
        token: dict[str, Any] = {}
        while True:
            page = await self.bucket.request("list_objects_v2", Prefix=self.root, **token)
            for item in page.get("Contents", ()):
                if (digest := self._digest_of(item["Key"])) is not None:
                    yield digest
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _digest_of(self, key: str) -> Digest | None:
        algorithm, _, rest = key.removeprefix(self.root).partition("/")
        shard, _, hex_ = rest.partition("/")
        try:
            digest = Digest(hex_, algorithm)
        except SwarmregError:
            return None
        return digest if shard == hex_[:2] else None

    async def download(self, namespace: str, digest: Digest) -> S3Blob | None:
        head = await self._head(digest)
        if head is None:
            return None
        return S3Blob(self.bucket, self.key(digest), int(head["ContentLength"]), self.options.part_size)

    async def upload(self, namespace: str, digest: Digest, chunks: AsyncIterable[bytes]) -> int:
        iterator = aiter(chunks)

        async def read(size: int) -> bytearray:
            part = bytearray()  # grows without copies; botocore and hashlib take it as bytes
            while len(part) < size and (chunk := await anext(iterator, None)) is not None:
                part += chunk
            return part

        return await self._store(digest, read, verify=True)

    async def upload_file(self, namespace: str, digest: Digest, path: Path) -> None:
        """Put the verified file; a blob held already is committed again instead (its LastModified
        renewed by a copy onto itself, inside S3), for the garbage collector's grace period."""
        size = path.stat().st_size
        head = await self._head(digest)
        if head is not None and int(head["ContentLength"]) == size and size <= MAX_PART_SIZE:
            key = self.key(digest)
            try:
                await self.bucket.request("copy_object", Key=key, CopySource={"Bucket": self.bucket.name, "Key": key},
                                          MetadataDirective="REPLACE")
                return
            except NotFound:
                pass  # deleted since the HEAD (a collection): put again
        fd = os.open(path, os.O_RDONLY)
        offset = 0

        async def read(size: int) -> bytes:
            nonlocal offset
            part = await trio.to_thread.run_sync(_pread_all, fd, size, offset)
            offset += len(part)
            return part

        try:
            await self._store(digest, read, verify=False)
        finally:
            os.close(fd)

    async def _store(self, digest: Digest, read: ReadPart, *, verify: bool) -> int:
        """Upload what ``read`` gives under the digest's key (checked against it with ``verify``):
        one PutObject if it fits a part, else a multipart upload. Returns the size."""
        key = self.key(digest)
        hasher = digest.hasher() if verify else None
        part = await read(self.options.part_size)
        if len(part) < self.options.part_size:
            if (whole := hasher) is not None:
                await self.bucket.run("hashing", partial(whole.update, part))
                _check(digest, whole.hexdigest())
            await self.bucket.request("put_object", Key=key, Body=part)
            return len(part)
        # Its steps are not abandoned when cancelled: S3 may keep a part that was still going up
        # when the upload was aborted, so the abort waits for them (a cancelled creation would
        # leave an upload unknown here, never aborted).
        created = await self.bucket.request("create_multipart_upload", Key=key, ChecksumAlgorithm="CRC32",
                                            abandon=False)
        upload_id = created["UploadId"]
        parts = _Parts(part, read)
        del part  # held by ``parts`` alone, which lets go of each part once it is sent
        try:
            return await self._upload_parts(digest, key, upload_id, parts, hasher)
        except BaseException:
            await self._abort(key, upload_id)
            raise

    async def _upload_parts(self, digest: Digest, key: str, upload_id: str, parts: _Parts, hasher: Any) -> int:
        def send(part: bytes | bytearray, number: int) -> dict[str, Any]:
            if hasher is not None:
                hasher.update(part)
            sent: dict[str, Any] = self.bucket.client().upload_part(  # type: ignore[assignment]
                Bucket=self.bucket.name, Key=key, UploadId=upload_id, PartNumber=number,
                Body=part,  # type: ignore[arg-type]  # a bytearray too, which the stubs leave out
                ChecksumAlgorithm="CRC32")
            return sent

        done: list[dict[str, Any]] = []
        size = 0
        while part := await parts.next(min(MAX_PART_SIZE, self.options.part_size * (1 + len(done) // PARTS_PER_STEP))):
            number = len(done) + 1
            if number > MAX_PARTS:
                raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self.bucket.name}: the blob needs more than "
                                    f"{MAX_PARTS} parts; raise part_size")
            sent = await self.bucket.run(f"uploading part {number} of {key}", partial(send, part, number),
                                         abandon=False)
            done.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]})
            size += len(part)
            del part  # let go of the bytes sent before the next part is read
        if hasher is not None:
            _check(digest, hasher.hexdigest())
        await self.bucket.request("complete_multipart_upload", Key=key, UploadId=upload_id,
                                  MultipartUpload={"Parts": done}, abandon=False)
        return size

    async def _abort(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload's parts (shielded: it runs when the upload is cancelled too)."""
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_DEADLINE) as deadline:
            try:
                await self.bucket.request("abort_multipart_upload", Key=key, UploadId=upload_id)
                return
            except SwarmregError:
                pass
        why = "it took too long" if deadline.cancelled_caught else "S3 refused"
        log.warning("S3 bucket %s: the parts of an unfinished upload of %s were not dropped (%s); a lifecycle "
                    "rule AbortIncompleteMultipartUpload removes them", self.bucket.name, key, why)

    async def aclose(self) -> None:
        await self.bucket.aclose()


class _Parts:
    """An upload's parts: the one read already, then what ``read`` gives."""

    def __init__(self, first: bytes | bytearray, read: ReadPart) -> None:
        self._first: bytes | bytearray | None = first
        self._read = read

    async def next(self, size: int) -> bytes | bytearray:
        """The next part (at least ``size`` bytes but at the end; empty after it)."""
        if self._first is not None:
            part, self._first = self._first, None
            return part
        return await self._read(size)


def _check(digest: Digest, hexdigest: str) -> None:
    if hexdigest != digest.hex:
        raise SwarmregError(DIGEST_INVALID, "content does not match digest",
                            {"digest": str(digest), "actual": f"{digest.algorithm}:{hexdigest}"})


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` from ``offset``: fewer only at the end of the file."""
    pieces = []
    while size and (piece := os.pread(fd, size, offset)):
        pieces.append(piece)
        size -= len(piece)
        offset += len(piece)
    return b"".join(pieces)


class S3Blob(GeneratedBlob):
    """One blob of the bucket, streamed: ranged GETs of ``range_size``, each read in chunks of
    STREAM_CHUNK as the consumer asks (so at most a chunk is in memory)."""

    def __init__(self, bucket: S3Bucket, key: str, size: int, range_size: int) -> None:
        super().__init__(size)
        self._bucket = bucket
        self._key = key
        self._range_size = range_size

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        for start in range(0, self._size, self._range_size):
            end = min(self._size, start + self._range_size)
            try:
                answer = await self._bucket.request("get_object", Key=self._key, Range=f"bytes={start}-{end - 1}")
            except NotFound:
                raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self._bucket.name}: the blob was deleted while "
                                    "it was read") from None
            body = answer["Body"]
            try:
                if int(answer["ContentLength"]) != end - start:
                    raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self._bucket.name}: the blob changed size "
                                        "while it was read")
                remaining = end - start
                while remaining:
                    chunk: bytes = await self._bucket.run(
                        f"reading {self._key}", partial(body.read, min(STREAM_CHUNK, remaining)))
                    if not chunk:
                        raise SwarmregError(BACKEND_UNAVAILABLE, f"S3 bucket {self._bucket.name}: the answer "
                                            "broke off")
                    remaining -= len(chunk)
                    yield chunk
            finally:
                body.close()
