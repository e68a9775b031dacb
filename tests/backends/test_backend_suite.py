"""The contract every storage backend keeps, run against every registered backend type.

A new backend type only needs to be registered (``swarmreg.backends.types.register_backend``) to be
tested here; if it needs something running (a server, a bucket), add an entry to BACKEND_SETUP.

The read tests run on every backend, with content put through the backend itself when it is
``writable`` and through its setup's seeder otherwise (a read-only backend, an upstream registry,
is filled at its source). The write, delete and list tests run on writable backends; on read-only
ones they check the refusal (UNSUPPORTED) and that nothing changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from swarmreg.backends.base import Backend
from swarmreg.backends.http import HttpOptions
from swarmreg.backends.registry import RegistryOptions
from swarmreg.backends.s3_bucket import S3Options
from swarmreg.backends.types import backend_types
from swarmreg.config import RegistryConfig, UpstreamAuthConfig
from swarmreg.digest import Digest
from swarmreg.errors import DIGEST_INVALID, UNSUPPORTED, SwarmregError
from swarmreg.sizes import ByteSize
from tests.conftest import random_bytes
from tests.servers.http_files import file_server
from tests.servers.s3 import ADMIN_KEYS, MotoServer
from tests.upstream.registries import blob_requests, docker_registry, push_blob

NS = "library/foo"
MiB = 1 << 20

# Puts content into a read-only backend's source: (namespace, data) -> its digest.
Seeder = Callable[[str, bytes], Awaitable[Digest]]


@attrs.frozen
class Setup:
    """What a backend type's setup gives: its options, and for a read-only type its seeder."""

    options: Any
    seed: Seeder | None = None
    # Anything else a test may use (the upstream's log, say).
    extra: dict[str, Any] = attrs.field(factory=dict)


@asynccontextmanager
async def default_options(kind, _tmp_path: Path, _request: Any = None) -> AsyncIterator[Setup]:
    yield Setup(kind.options())


@asynccontextmanager
async def upstream_registry(_kind, tmp_path: Path, _request: Any = None, *, password: str = "") -> AsyncIterator[Setup]:
    """A real docker-registry (htpasswd basic auth with ``password``), seeded by real pushes."""
    users = {"puller": password} if password else None
    with docker_registry(tmp_path, users=users) as port:
        name = f"127.0.0.1:{port}"
        auth = UpstreamAuthConfig(user="puller", password=password) if password else UpstreamAuthConfig()
        http_auth = httpx.BasicAuth("puller", password) if password else None

        async def seed(namespace: str, data: bytes) -> Digest:
            return Digest.parse(await push_blob(f"http://{name}", namespace, data, auth=http_auth))

        options = RegistryOptions(registries=(RegistryConfig(name=name, scheme="http", auth=auth),), registry=name)
        yield Setup(options, seed, {"log": tmp_path / "docker-registry.log"})


@asynccontextmanager
async def moto_bucket(_kind, _tmp_path: Path, request: Any) -> AsyncIterator[Setup]:
    """A new bucket of the session's moto server (real S3 API over HTTP); parts of 5 MiB, the
    smallest S3 takes, so the suite's larger blobs go up in several."""
    server: MotoServer = request.getfixturevalue("moto_server")
    bucket = server.create_bucket()
    options = S3Options(bucket=bucket, prefix="suite/blobstore", endpoint_url=server.endpoint_url, region="us-east-1",
                        part_size=ByteSize(5 * MiB), **s3_keys(ADMIN_KEYS))
    yield Setup(options, extra={"server": server})


@asynccontextmanager
async def http_files(_kind, tmp_path: Path, _request: Any) -> AsyncIterator[Setup]:
    """A real web server of a directory, seeded by writing ``blobs/<digest>`` files into it."""
    root = tmp_path / "web"
    (root / "blobs").mkdir(parents=True)
    with file_server(root) as (port, log):
        async def seed(_namespace: str, data: bytes) -> Digest:
            digest = Digest.of(data)
            (root / "blobs" / str(digest)).write_bytes(data)
            return digest

        yield Setup(HttpOptions(base=f"http://127.0.0.1:{port}/blobs/"), seed, {"root": root, "log": log})


def s3_keys(keys: dict[str, str]) -> dict[str, str]:
    """boto3's key arguments as S3Options' fields."""
    return {"access_key_id": keys["aws_access_key_id"], "secret_access_key": keys["aws_secret_access_key"]}


# Backend type name -> async context manager (kind, tmp_path, pytest's request) -> Setup, for
# backend types that need a server or other resources around them; the rest are built with
# their default options.
BACKEND_SETUP: dict[str, Callable[[Any, Path, Any], AbstractAsyncContextManager[Setup]]] = {
    "registry": upstream_registry,
    "s3": moto_bucket,
    "http": http_files,
}


@attrs.define
class Subject:
    """A backend under test and how to put content into it."""

    backend: Backend
    setup: Setup

    @property
    def writable(self) -> bool:
        return self.backend.writable

    async def put(self, data: bytes, chunk: int = 64 << 10) -> Digest:
        """Store ``data``: through the backend if it is writable, else through the seeder."""
        if self.writable:
            digest = Digest.of(data)
            assert await self.backend.upload(NS, digest, chunks(data, chunk)) == len(data)
            return digest
        assert self.setup.seed is not None, "a read-only backend's setup must give a seeder"
        return await self.setup.seed(NS, data)


@pytest.fixture(params=backend_types(), ids=lambda kind: kind.name)
async def subject(request, tmp_path) -> AsyncIterator[Subject]:
    """A backend of each registered type, built by its registered factory with data_dir=tmp_path."""
    kind = request.param
    async with BACKEND_SETUP.get(kind.name, default_options)(kind, tmp_path, request) as setup:
        built = kind.factory(setup.options, tmp_path)
        try:
            yield Subject(built, setup)
        finally:
            await built.aclose()


@pytest.fixture
def backend(subject: Subject) -> Backend:
    return subject.backend


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


async def refused(call: Awaitable[Any]) -> SwarmregError:
    """The call fails with UNSUPPORTED, saying so clearly."""
    with pytest.raises(SwarmregError) as info:
        await call
    assert info.value.code is UNSUPPORTED
    assert "cannot" in info.value.message and NS in info.value.message
    return info.value


# -- reads: every backend ---------------------------------------------------------------------------


async def test_stat_of_a_missing_blob_is_none(backend):
    assert await backend.stat(NS, Digest.of(b"missing")) is None


async def test_put_then_stat_gives_the_size(subject, backend):
    data = random_bytes(100_000)
    digest = await subject.put(data)
    assert await backend.stat(NS, digest) == len(data)


async def test_empty_blob_round_trips(subject, backend):
    digest = await subject.put(b"")
    assert digest == Digest.of(b"")
    assert await backend.stat(NS, digest) == 0
    assert await download(backend, digest) == b""


async def test_download_streams_identical_bytes_with_the_right_size(subject, backend):
    data = random_bytes(300_000, seed=1)
    digest = await subject.put(data, 10_000)
    stream = await backend.download(NS, digest)
    assert stream is not None and stream.size == len(data)
    async with stream:
        received = b"".join([chunk async for chunk in stream])
    assert received == data


async def test_download_of_a_missing_blob_is_none(backend):
    assert await backend.download(NS, Digest.of(b"missing")) is None


async def test_a_20_mib_blob_round_trips_in_chunks(subject, backend):
    data = random_bytes(20 * MiB, seed=4)
    digest = await subject.put(data, MiB)
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


async def test_concurrent_reads(subject, backend):
    blobs = {}
    for seed in range(6):
        data = random_bytes(200_000 + seed, seed=10 + seed)
        blobs[await subject.put(data)] = data
    received: dict[tuple[Digest, int], bytes] = {}

    async def read(digest: Digest, reader: int) -> None:
        assert await backend.stat(NS, digest) == len(blobs[digest])
        received[digest, reader] = await download(backend, digest)

    async with trio.open_nursery() as nursery:
        for digest in blobs:
            for reader in range(3):  # the same blob several times at once, too
                nursery.start_soon(read, digest, reader)
    assert received == {(digest, reader): data for digest, data in blobs.items() for reader in range(3)}


async def test_a_download_stopped_early_leaves_the_backend_serving(subject, backend):
    data = random_bytes(8 * MiB, seed=5)
    digest = await subject.put(data, MiB)
    for _ in range(3):
        stream = await backend.download(NS, digest)
        assert stream is not None
        async with stream:
            async for chunk in stream:
                assert chunk == data[:len(chunk)]
                break  # the consumer gives up after one chunk
    assert await download(backend, digest) == data


# -- writes, deletes and lists: writable backends; read-only ones refuse ------------------------------


async def test_upload_not_matching_the_digest_is_refused(backend):
    claimed = Digest.of(b"what was promised")
    with pytest.raises(SwarmregError) as info:
        await backend.upload(NS, claimed, chunks(random_bytes(50_000)))
    assert info.value.code is (DIGEST_INVALID if backend.writable else UNSUPPORTED)
    assert await backend.stat(NS, claimed) is None
    assert await backend.download(NS, claimed) is None
    assert await listed(backend) == set()


async def test_upload_twice_is_harmless(subject, backend):
    data = random_bytes(20_000, seed=2)
    digest = Digest.of(data)
    if not backend.writable:
        await refused(backend.upload(NS, digest, chunks(data)))
        assert await backend.stat(NS, digest) is None
        await subject.put(data)
        await refused(backend.upload(NS, digest, chunks(data)))
        assert await download(backend, digest) == data
        return
    assert await backend.upload(NS, digest, chunks(data)) == len(data)
    assert await backend.upload(NS, digest, chunks(data)) == len(data)
    assert await backend.stat(NS, digest) == len(data)
    assert await download(backend, digest) == data
    assert await listed(backend) == {digest}


async def test_delete_returns_true_then_false(subject, backend):
    data = b"to be deleted"
    digest = await subject.put(data)
    if not backend.writable:
        await refused(backend.delete(NS, digest))
        await refused(backend.delete(NS, Digest.of(b"never there")))
        assert await backend.stat(NS, digest) == len(data)
        assert await download(backend, digest) == data
        return
    assert await backend.delete(NS, digest) is True
    assert await backend.stat(NS, digest) is None
    assert await backend.download(NS, digest) is None
    assert await backend.delete(NS, digest) is False


async def test_list_yields_uploaded_digests(subject, backend):
    assert await listed(backend) == set()
    blobs = {Digest.of(data): data for data in (b"one", b"two", random_bytes(5000, seed=3))}
    for data in blobs.values():
        await subject.put(data)
    # A read-only backend cannot list its source's blobs (the Registry API has no such call).
    assert await listed(backend) == (set(blobs) if backend.writable else set())


async def test_concurrent_uploads_of_different_blobs(backend):
    blobs = {Digest.of(data): data for data in (random_bytes(200_000, seed=s) for s in range(8))}
    errors: list[SwarmregError] = []

    async def upload(digest: Digest, data: bytes) -> None:
        try:
            await backend.upload(NS, digest, chunks(data, 8192))
        except SwarmregError as error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        for digest, data in blobs.items():
            nursery.start_soon(upload, digest, data)
    if not backend.writable:
        assert [error.code for error in errors] == [UNSUPPORTED] * len(blobs)
        for digest in blobs:
            assert await backend.stat(NS, digest) is None
        return
    assert errors == []
    assert await listed(backend) == set(blobs)
    for digest, data in blobs.items():
        assert await backend.stat(NS, digest) == len(data)
        assert await download(backend, digest) == data


async def test_upload_file_stores_a_local_file(backend, tmp_path):
    data = random_bytes(3 << 20, seed=31)
    source = tmp_path / "verified-blob"
    source.write_bytes(data)
    digest = Digest.of(data)
    if not backend.writable:
        await refused(backend.upload_file(NS, digest, source))
        assert await backend.stat(NS, digest) is None
    else:
        await backend.upload_file(NS, digest, source)
        await backend.upload_file(NS, digest, source)  # again: harmless
        assert await download(backend, digest) == data
    assert source.read_bytes() == data, "the source is left as it was"


# -- backend types' own cases ---------------------------------------------------------------------------


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


async def test_registry_backend_with_htpasswd_basic_auth(tmp_path):
    """An upstream that wants credentials: the configured ones read it; none or wrong ones fail
    with a clear UPSTREAM_ERROR naming the upstream, never the password."""
    from swarmreg.backends.registry import RegistryBackend
    from swarmreg.errors import UPSTREAM_ERROR

    password = "suite-upstream-pw"
    async with upstream_registry(None, tmp_path, password=password) as setup:
        data = random_bytes(2 * MiB + 17, seed=33)
        assert setup.seed is not None
        digest = await setup.seed(NS, data)
        backend = RegistryBackend.from_options(setup.options, tmp_path)
        try:
            assert await backend.stat(NS, digest) == len(data)
            assert await download(backend, digest) == data
            assert await backend.stat(NS, Digest.of(b"absent")) is None
        finally:
            await backend.aclose()
        assert blob_requests(setup.extra["log"], "GET", str(digest)) == 1
        name = setup.options.registry
        for auth in (UpstreamAuthConfig(), UpstreamAuthConfig(user="puller", password="wrong-pw")):
            backend = RegistryBackend([RegistryConfig(name=name, scheme="http", auth=auth)], registry=name)
            try:
                for call in (backend.stat(NS, digest), backend.download(NS, digest)):
                    with pytest.raises(SwarmregError) as info:
                        await call
                    assert info.value.code is UPSTREAM_ERROR and name in info.value.message
                    assert password not in info.value.message and "wrong-pw" not in info.value.message
            finally:
                await backend.aclose()
        assert blob_requests(setup.extra["log"], "GET", str(digest)) == 1


async def test_registry_backend_closes_the_upstream_connection_when_a_reader_stops_early(tmp_path):
    """A reader that leaves after one chunk: the upstream stops sending (its access log shows a
    GET that wrote far less than the blob), rather than the rest being read and thrown away."""
    import re

    from swarmreg.backends.registry import RegistryBackend

    async with upstream_registry(None, tmp_path) as setup:
        data = random_bytes(32 * MiB, seed=34)
        assert setup.seed is not None
        digest = await setup.seed(NS, data)
        backend = RegistryBackend.from_options(setup.options, tmp_path)
        try:
            stream = await backend.download(NS, digest)
            assert stream is not None
            async with stream:
                async for _chunk in stream:
                    break
            served = re.compile(rf'"GET /v2/{NS}/blobs/{digest} HTTP/1\.1" 200 (\d+)')
            with trio.fail_after(10):
                while not (sizes := served.findall(setup.extra["log"].read_text())):
                    await trio.sleep(0.05)
            assert len(sizes) == 1 and int(sizes[0]) < len(data) // 2, sizes
            assert await download(backend, digest) == data  # and it serves on
        finally:
            await backend.aclose()
