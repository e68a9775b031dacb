"""BlobStore: content-addressed blobs that only ever appear whole and under their true digest."""

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from swarmreg.digest import Digest
from swarmreg.errors import DIGEST_INVALID, SwarmregError
from swarmreg.store.blobstore import BlobStore
from tests.conftest import blob_files, files_under, random_bytes


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def make_store(root, *, fsync=False, chunk_size=64 << 10) -> BlobStore:
    store = BlobStore(root, fsync=fsync, chunk_size=chunk_size)
    store.prepare()
    return store


async def read_body(store: BlobStore, digest: Digest, start: int = 0, end: int | None = None) -> bytes:
    body, _size = store.open_body(digest, start, end)
    async with body:
        return b"".join([chunk async for chunk in body])


def test_prepare_creates_the_layout(tmp_path):
    make_store(tmp_path / "data")
    assert (tmp_path / "data" / "blobs" / "sha256").is_dir()
    assert (tmp_path / "data" / "tmp").is_dir()


async def test_prepare_removes_stale_temp_files_and_keeps_blobs(tmp_path):
    store = make_store(tmp_path)
    data = b"kept"
    await store.write(Digest.of(data), chunks(data))
    (tmp_path / "tmp" / "leftover").write_bytes(b"partial")
    (tmp_path / "tmp" / "subdir").mkdir()
    (tmp_path / "tmp" / "subdir" / "x").write_bytes(b"x")
    make_store(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert blob_files(tmp_path) == {Digest.of(data).hex: len(data)}


async def test_write_stores_under_the_digest_path_and_returns_the_size(tmp_path):
    store = make_store(tmp_path, fsync=True)
    data = random_bytes(300_000)
    digest = Digest.of(data)
    assert await store.write(digest, chunks(data, 7000)) == len(data)
    path = tmp_path / "blobs" / "sha256" / digest.hex[:2] / digest.hex
    assert store.path(digest) == path
    assert path.read_bytes() == data
    assert files_under(tmp_path) == {f"blobs/sha256/{digest.hex[:2]}/{digest.hex}"}


async def test_write_of_an_empty_blob(tmp_path):
    store = make_store(tmp_path)
    digest = Digest.of(b"")
    assert await store.write(digest, chunks(b"")) == 0
    assert store.size(digest) == 0 and digest in store


async def test_write_with_a_wrong_digest_leaves_nothing(tmp_path):
    store = make_store(tmp_path)
    data, claimed = random_bytes(200_000), Digest.of(b"something else")
    with pytest.raises(SwarmregError) as info:
        await store.write(claimed, chunks(data))
    assert info.value.code is DIGEST_INVALID
    assert info.value.detail["actual"] == str(Digest.of(data))
    assert claimed not in store and Digest.of(data) not in store
    assert files_under(tmp_path) == set()


async def test_concurrent_writers_of_one_digest_leave_one_intact_blob(tmp_path):
    store = make_store(tmp_path, chunk_size=16 << 10)
    data = random_bytes(500_000)
    digest = Digest.of(data)
    wrong = random_bytes(500_000, seed=1)
    outcomes = []

    async def writer(content: bytes) -> None:
        try:
            outcomes.append(await store.write(digest, chunks(content, 10_000)))
        except SwarmregError as error:
            outcomes.append(error.code)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(writer, data if i % 3 else wrong)
    assert sorted(outcomes, key=str) == sorted([len(data)] * 5 + [DIGEST_INVALID] * 3, key=str)
    assert blob_files(tmp_path) == {digest.hex: len(data)}
    assert store.path(digest).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []


async def test_cancelled_writer_leaves_no_blob_and_no_temp_file(tmp_path):
    store = make_store(tmp_path, chunk_size=1024)
    data = random_bytes(10_000)
    digest = Digest.of(data)
    half_sent = trio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield data[:5000]
        yield data[5000:6000]  # past chunk_size: the first half is on disk by now
        half_sent.set()
        await trio.sleep_forever()
        yield data[6000:]

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, digest, stalling_body())
            await half_sent.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert len(list(store.tmp_dir.iterdir())) == 1  # the write really was in progress
            scope.cancel()
    assert scope.cancelled_caught
    assert digest not in store
    assert files_under(tmp_path) == set()


async def test_open_body_streams_exact_ranges(tmp_path):
    store = make_store(tmp_path, chunk_size=4096)
    data = random_bytes(50_000)
    digest = Digest.of(data)
    await store.write(digest, chunks(data))
    body, size = store.open_body(digest)
    assert size == len(data) and body.size == len(data)
    body.close()
    assert await read_body(store, digest) == data
    for start, end in [(0, 1), (0, 4096), (1, 4097), (12_345, 40_000), (49_999, 50_000), (100, 100)]:
        body, _ = store.open_body(digest, start, end)
        assert body.size == end - start
        body.close()
        assert await read_body(store, digest, start, end) == data[start:end]
    assert await read_body(store, digest, 45_000) == data[45_000:]


async def test_open_body_keeps_streaming_a_deleted_blob(tmp_path):
    """The descriptor is opened first, so deleting the blob mid-response cannot tear it."""
    store = make_store(tmp_path)
    data = random_bytes(10_000)
    digest = Digest.of(data)
    await store.write(digest, chunks(data))
    body, _ = store.open_body(digest)
    await store.delete(digest)
    async with body:
        assert b"".join([chunk async for chunk in body]) == data


def test_open_body_of_a_missing_blob_is_none(tmp_path):
    assert make_store(tmp_path).open_body(Digest.of(b"missing")) is None


async def test_size_contains_delete_and_digests(tmp_path):
    store = make_store(tmp_path)
    blobs = {Digest.of(d): d for d in (b"a", b"bb", random_bytes(1000))}
    missing = Digest.of(b"missing")
    assert list(store.digests()) == [] and store.size(missing) is None and missing not in store
    for digest, data in blobs.items():
        await store.write(digest, chunks(data))
    assert sorted(store.digests()) == sorted(blobs)
    for digest, data in blobs.items():
        assert store.size(digest) == len(data) and digest in store
    first = next(iter(blobs))
    assert await store.delete(first) is True
    assert await store.delete(first) is False
    assert first not in store and store.size(first) is None
    assert sorted(store.digests()) == sorted(set(blobs) - {first})


async def test_install_moves_a_matching_file_into_place(tmp_path):
    store = make_store(tmp_path, fsync=True)
    data = random_bytes(70_000)
    source = store.temp_path()
    source.write_bytes(data)
    await store.install(source, Digest.of(data))
    assert not source.exists()
    assert store.path(Digest.of(data)).read_bytes() == data


async def test_install_of_mismatching_content_removes_the_file(tmp_path):
    store = make_store(tmp_path)
    source = store.temp_path()
    source.write_bytes(b"not what was promised")
    claimed = Digest.of(b"promised")
    with pytest.raises(SwarmregError) as info:
        await store.install(source, claimed)
    assert info.value.code is DIGEST_INVALID
    assert not source.exists()
    assert claimed not in store and files_under(tmp_path) == set()


async def test_install_refuses_a_caller_hash_other_than_the_digest(tmp_path):
    """A caller-supplied hexdigest that differs from the digest is refused the same way."""
    store = make_store(tmp_path)
    source = store.temp_path()
    source.write_bytes(b"x")
    with pytest.raises(SwarmregError) as info:
        await store.install(source, Digest.of(b"x"), hexdigest=Digest.of(b"y").hex)
    assert info.value.code is DIGEST_INVALID
    assert not source.exists() and Digest.of(b"x") not in store


async def test_a_write_fsyncs_the_blob_its_shard_and_a_new_shard_in_its_parent(tmp_path, monkeypatch):
    import os

    store = make_store(tmp_path, fsync=True)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    def key(path) -> tuple[int, int]:
        st = path.stat()
        return st.st_dev, st.st_ino

    monkeypatch.setattr(os, "fsync", recording_fsync)
    first = Digest.of(b"first")
    await store.write(first, chunks(b"first"))
    path = store.path(first)
    assert synced == [key(path.parent.parent), key(path), key(path.parent)], \
        "the new shard in its parent, the file, the shard with the file in it"
    synced.clear()
    # Another blob of the same shard: the shard is not new, its parent is not synced again.
    data = next(data for data in (str(i).encode() for i in range(10_000))
                if Digest.of(data).hex[:2] == first.hex[:2])
    await store.write(Digest.of(data), chunks(data))
    assert key(path.parent.parent) not in synced and key(path.parent) in synced
