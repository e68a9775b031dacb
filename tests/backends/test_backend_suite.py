"""The contract every storage backend keeps, run against every registered backend type.

A new backend type only needs to be registered (``swarmreg.backends.types.register_backend``) to be
tested here; if it needs something running (a server, a bucket), add an entry to BACKEND_SETUP.
"""

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from swarmreg.backends.base import Backend
from swarmreg.backends.types import backend_types
from swarmreg.digest import Digest
from swarmreg.errors import DIGEST_INVALID, SwarmregError
from tests.conftest import random_bytes

NS = "library/foo"
MiB = 1 << 20


@asynccontextmanager
async def default_options(kind, _tmp_path: Path) -> AsyncIterator[Any]:
    yield kind.options()


# Backend type name -> async context manager (kind, tmp_path) -> options, for backend types that
# need a server or other resources around them; the rest are built with their default options.
BACKEND_SETUP: dict[str, Callable[[Any, Path], AbstractAsyncContextManager[Any]]] = {}


@pytest.fixture(params=backend_types(), ids=lambda kind: kind.name)
async def backend(request, tmp_path) -> AsyncIterator[Backend]:
    """A backend of each registered type, built by its registered factory with data_dir=tmp_path."""
    kind = request.param
    async with BACKEND_SETUP.get(kind.name, default_options)(kind, tmp_path) as options:
        built = kind.factory(options, tmp_path)
        try:
            yield built
        finally:
            await built.aclose()


async def chunks(data: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def download(backend: Backend, digest: Digest) -> bytes:
    stream = await backend.download(NS, digest)
    assert stream is not None
    async with stream:
        return b"".join([chunk async for chunk in stream])


async def listed(backend: Backend) -> set[Digest]:
    return {digest async for digest in backend.list(NS)}


async def test_stat_of_a_missing_blob_is_none(backend):
    assert await backend.stat(NS, Digest.of(b"missing")) is None


async def test_upload_then_stat_gives_the_size(backend):
    data = random_bytes(100_000)
    digest = Digest.of(data)
    assert await backend.upload(NS, digest, chunks(data)) == len(data)
    assert await backend.stat(NS, digest) == len(data)


async def test_empty_blob_round_trips(backend):
    digest = Digest.of(b"")
    assert await backend.upload(NS, digest, chunks(b"")) == 0
    assert await backend.stat(NS, digest) == 0
    assert await download(backend, digest) == b""


async def test_download_streams_identical_bytes_with_the_right_size(backend):
    data = random_bytes(300_000, seed=1)
    digest = Digest.of(data)
    await backend.upload(NS, digest, chunks(data, 10_000))
    stream = await backend.download(NS, digest)
    assert stream is not None and stream.size == len(data)
    async with stream:
        received = b"".join([chunk async for chunk in stream])
    assert received == data


async def test_download_of_a_missing_blob_is_none(backend):
    assert await backend.download(NS, Digest.of(b"missing")) is None


async def test_upload_not_matching_the_digest_is_refused(backend):
    claimed = Digest.of(b"what was promised")
    with pytest.raises(SwarmregError) as info:
        await backend.upload(NS, claimed, chunks(random_bytes(50_000)))
    assert info.value.code is DIGEST_INVALID
    assert await backend.stat(NS, claimed) is None
    assert await backend.download(NS, claimed) is None
    assert await listed(backend) == set()


async def test_upload_twice_is_harmless(backend):
    data = random_bytes(20_000, seed=2)
    digest = Digest.of(data)
    assert await backend.upload(NS, digest, chunks(data)) == len(data)
    assert await backend.upload(NS, digest, chunks(data)) == len(data)
    assert await backend.stat(NS, digest) == len(data)
    assert await download(backend, digest) == data
    assert await listed(backend) == {digest}


async def test_delete_returns_true_then_false(backend):
    data = b"to be deleted"
    digest = Digest.of(data)
    await backend.upload(NS, digest, chunks(data))
    assert await backend.delete(NS, digest) is True
    assert await backend.stat(NS, digest) is None
    assert await backend.download(NS, digest) is None
    assert await backend.delete(NS, digest) is False


async def test_list_yields_uploaded_digests(backend):
    assert await listed(backend) == set()
    blobs = {Digest.of(data): data for data in (b"one", b"two", random_bytes(5000, seed=3))}
    for digest, data in blobs.items():
        await backend.upload(NS, digest, chunks(data))
    assert await listed(backend) == set(blobs)


async def test_concurrent_uploads_of_different_blobs(backend):
    blobs = {Digest.of(data): data for data in (random_bytes(200_000, seed=s) for s in range(8))}
    async with trio.open_nursery() as nursery:
        for digest, data in blobs.items():
            nursery.start_soon(backend.upload, NS, digest, chunks(data, 8192))
    assert await listed(backend) == set(blobs)
    for digest, data in blobs.items():
        assert await backend.stat(NS, digest) == len(data)
        assert await download(backend, digest) == data


async def test_a_20_mib_blob_round_trips_in_chunks(backend):
    data = random_bytes(20 * MiB, seed=4)
    digest = Digest.of(data)
    assert await backend.upload(NS, digest, chunks(data, MiB)) == len(data)
    assert await backend.stat(NS, digest) == len(data)
    stream = await backend.download(NS, digest)
    assert stream is not None and stream.size == len(data)
    hasher, received, pieces = hashlib.sha256(), 0, 0
    async with stream:
        async for chunk in stream:
            hasher.update(chunk)
            received += len(chunk)
            pieces += 1
    assert received == len(data) and hasher.hexdigest() == digest.hex
    assert pieces > 1  # streamed, not read whole


async def test_upload_file_stores_a_local_file(backend, tmp_path):
    data = random_bytes(3 << 20, seed=31)
    source = tmp_path / "verified-blob"
    source.write_bytes(data)
    digest = Digest.of(data)
    await backend.upload_file("ns", digest, source)
    await backend.upload_file("ns", digest, source)  # again: harmless
    assert await download(backend, digest) == data
    assert source.read_bytes() == data, "the source is left as it was"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm to put a second filesystem under")
async def test_filesystem_backend_copies_across_filesystems(tmp_path):
    """On one filesystem the file is hard-linked; across two (EXDEV) it is copied."""
    import tempfile

    from swarmreg.backends.filesystem import FilesystemBackend

    with tempfile.TemporaryDirectory(dir="/dev/shm") as other_filesystem:
        backend = FilesystemBackend(Path(other_filesystem) / "backend")
        data = random_bytes(1 << 20, seed=32)
        source = tmp_path / "blob"
        source.write_bytes(data)
        await backend.upload_file("ns", Digest.of(data), source)
        stored = backend.store.path(Digest.of(data))
        assert stored.read_bytes() == data and stored.stat().st_ino != source.stat().st_ino
