"""``swarmreg blob push FILE --origin URL``: a file into an origin through Kraken's upload API
(POST, PATCHes with Content-Range, PUT), resumable.

The file is hashed first (its digest names the blob), then streamed from disk in chunks. The
upload session's id is recorded (swarmreg.transfer.state) before the first byte is sent, so the
same command run again after an interruption asks the origin where the session stands
(``GET`` of the upload: UPLOAD_SIZE) and sends only the rest. A blob the origin holds already is
not uploaded. The origin verifies the digest at the commit; the record goes once it is committed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable

import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, SwarmregError
from swarmreg.origin.client import KrakenUpload, OriginClient
from swarmreg.transfer.common import USAGE, TransferError, hash_file, refused
from swarmreg.transfer.progress import human_size, meter
from swarmreg.transfer.state import Busy, PushRecord, PushState

CREDENTIALS = ("an upload needs the cluster secret (--secret-file, or $SWARMREG_CLUSTER_SECRET) or, on TLS, "
               "--cert with the proxy or origin role")
# Attempts at sending the rest when the origin refuses a chunk's range (see push).
RANGE_ATTEMPTS = 4


def open_file(path: str) -> tuple[int, int]:
    """The file at ``path`` opened for reading, and its size; TransferError for a directory, a
    device or a pipe (its bytes could not be read again to resume), or one that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise TransferError(f"cannot read {path}: {error.strerror}", USAGE) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise TransferError(f"{path} is {kind}: a blob is pushed from a file", USAGE)
    return fd, info.st_size


async def push(client: OriginClient, member: Address, state: PushState, namespace: str, digest: Digest,
               fd: int, size: int, *, chunk: int) -> tuple[bool, int]:
    """Upload bytes [0, size) of ``fd`` as ``digest``, resuming the session ``state`` records;
    returns whether anything was uploaded and from which offset the bytes were sent."""
    upload, offset = await _resumed(client, member, state, namespace, digest, size)
    if upload is None:
        upload = await client.start_upload(namespace, digest)
        if upload is None:
            state.clear()
            return False, 0
        state.save(PushRecord(state.key[0], namespace, str(digest), upload.uid, size))
        offset = 0
    progress = meter(f"push {digest.hex[:12]}", size, offset)
    try:
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            try:
                await client.send_file(upload, fd, offset, size, chunk=chunk, sent=progress.advance)
                break
            except SwarmregError as error:
                # A chunk of the push interrupted a moment ago may still be in flight at the origin
                # (it has not yet seen the connection go): ask again where the session stands.
                if error.code is not RANGE_INVALID or attempt == RANGE_ATTEMPTS:
                    raise
            await trio.sleep(attempt * 0.5)
            offset = await client.upload_offset(upload)
            if offset > size:
                raise TransferError(f"the origin's upload holds {offset} bytes, more than the file's {size}")
            progress.reset(offset)
    finally:
        progress.close()
    try:
        await client.commit_upload(upload, through=True)
    except SwarmregError as error:
        if error.code in (DIGEST_INVALID, BLOB_UPLOAD_UNKNOWN):  # the origin dropped the session
            state.clear()
        if error.code is DIGEST_INVALID:
            raise TransferError(f"the origin found that the bytes sent are not {digest}: did the file change "
                                "while it was pushed?") from None
        raise
    state.clear()
    return True, offset


async def _resumed(client: OriginClient, member: Address, state: PushState, namespace: str, digest: Digest,
                   size: int) -> tuple[KrakenUpload | None, int]:
    """The recorded session and where it stands, if the origin still has it for this file."""
    record = state.load()
    if record is None or record.size != size:
        return None, 0
    upload = KrakenUpload(member, namespace, digest, record.uid)
    try:
        offset = await client.upload_offset(upload)
    except SwarmregError as error:
        if error.code is not BLOB_UPLOAD_UNKNOWN:
            raise
        print("the upload recorded for this blob is gone from the origin (committed, or expired): starting over",
              file=sys.stderr)
        return None, 0
    if offset > size:
        print(f"the origin's upload holds {offset} bytes, more than the file's {size}: starting over",
              file=sys.stderr)
        await client.at(member).abandon(upload.uid, namespace)
        return None, 0
    if offset:
        print(f"resuming the upload at {human_size(offset)} of {human_size(size)}", file=sys.stderr)
    return upload, offset


def run_push(path: str, origin_url: str, connect: Callable[[], OriginClient], member: Address, namespace: str,
             chunk: int) -> int:
    """The command: hash the file at ``path``, push it to the origin ``connect()`` reaches (at
    ``member``, given as ``origin_url``); prints the digest on standard output."""
    fd, size = open_file(path)
    try:
        _reachable(connect, origin_url)  # before hashing what may be gigabytes
        hasher = hashlib.sha256()
        hash_file(fd, hasher, size, f"hash {os.path.basename(path)}")
        digest = Digest(hasher.hexdigest())

        async def main(state: PushState) -> tuple[bool, int]:
            async with connect() as client:
                return await push(client, member, state, namespace, digest, fd, size, chunk=chunk)

        try:
            with PushState(origin_url, namespace, str(digest)) as state:
                if state.error is not None:
                    print(f"cannot record the upload for a resume ({state.error.strerror}): pushing without",
                          file=sys.stderr)
                uploaded, offset = trio.run(main, state)
        except Busy:
            raise TransferError(f"another swarmreg blob push of {digest} to {origin_url} is running") from None
        except SwarmregError as error:
            raise refused(error, "origin", origin_url, CREDENTIALS) from None
    finally:
        os.close(fd)
    if uploaded:
        resumed = f", resumed at {human_size(offset)}" if offset else ""
        print(f"pushed {human_size(size)} to {origin_url} ({namespace}){resumed}", file=sys.stderr)
    else:
        print(f"the origin at {origin_url} already has {digest}: nothing uploaded", file=sys.stderr)
    print(digest, flush=True)
    return 0


def _reachable(connect: Callable[[], OriginClient], origin_url: str) -> None:
    async def check() -> None:
        async with connect() as client:
            await client.health()

    try:
        trio.run(check)
    except SwarmregError as error:
        raise refused(error, "origin", origin_url) from None
