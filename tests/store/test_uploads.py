"""UploadManager: chunked, resumable upload sessions that commit atomically into a real BlobStore."""

import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmreg.digest import Digest
from swarmreg.errors import (
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    RANGE_INVALID,
    SIZE_INVALID,
    TOO_LARGE,
    TOOMANYREQUESTS,
    UNAVAILABLE,
    SwarmregError,
)
from swarmreg.http.ranges import ByteRange
from swarmreg.store.blobstore import BlobStore
from swarmreg.store.uploads import UploadManager
from tests.conftest import blob_files, random_bytes

NS = "library/foo"


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def make_manager(root: Path, *, ttl: float = 3600, max_size: int = 1 << 30) -> UploadManager:
    store = BlobStore(root / "store", fsync=False, chunk_size=4096)
    store.prepare()
    manager = UploadManager(root / "uploads", store, ttl=ttl, max_size=max_size)
    manager.load()
    return manager


def reopen(manager: UploadManager) -> UploadManager:
    """A new manager over the same directories, as after a restart."""
    again = UploadManager(manager.root, manager.store, ttl=manager.ttl, max_size=manager.max_size)
    again.load()
    return again


async def put(manager, upload, data: bytes, start: int, end: int, body: bytes | None = None) -> None:
    """Write bytes [start, end) of ``data`` (or ``body`` instead) as one chunk."""
    await manager.write(upload, ByteRange(start, end), chunks(data[start:end] if body is None else body, 700))


def error_code(excinfo) -> object:
    return excinfo.value.code


@pytest.fixture
def manager(tmp_path) -> UploadManager:
    return make_manager(tmp_path)


async def test_in_order_upload_commits_into_the_store_and_removes_the_session(manager, tmp_path):
    data = random_bytes(30_000)
    digest = Digest.of(data)
    upload = await manager.create(NS, digest)
    assert upload.dir.is_dir() and (upload.dir / "meta.json").is_file()
    for start in range(0, len(data), 10_000):
        await put(manager, upload, data, start, start + 10_000)
    assert upload.meta.ranges == ((0, 30_000),)
    assert await manager.commit(upload, digest) == len(data)
    assert manager.store.path(digest).read_bytes() == data
    assert not upload.dir.exists() and len(manager) == 0
    with pytest.raises(SwarmregError) as info:
        manager.get(upload.uid, NS, digest)
    assert error_code(info) is BLOB_UPLOAD_UNKNOWN


async def test_empty_upload_commits_an_empty_blob(manager):
    digest = Digest.of(b"")
    upload = await manager.create(NS, digest)
    assert await manager.commit(upload, digest) == 0
    assert manager.store.size(digest) == 0


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=12), data=st.data())
def test_chunks_in_any_order_commit_correctly(sizes, data):
    order = data.draw(st.permutations(range(len(sizes))), label="order")
    content = random_bytes(sum(sizes), seed=len(sizes))
    bounds = [(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(len(sizes))]

    async def scenario(root: Path) -> None:
        manager = make_manager(root)
        digest = Digest.of(content)
        upload = await manager.create(NS, digest)
        for i in order:
            await put(manager, upload, content, *bounds[i])
        assert upload.meta.ranges == ((0, len(content)),)
        assert await manager.commit(upload, digest) == len(content)
        assert manager.store.path(digest).read_bytes() == content

    with tempfile.TemporaryDirectory() as root:
        trio.run(scenario, Path(root))


async def test_overlapping_chunk_is_refused_and_changes_nothing(manager):
    data = random_bytes(3000)
    upload = await manager.create(NS, Digest.of(data))
    await put(manager, upload, data, 0, 1000)
    await put(manager, upload, data, 2000, 3000)
    before = upload.data_path.read_bytes()
    for start, end in [(500, 1500), (0, 1000), (999, 2001), (1500, 2500), (0, 3000), (2999, 3001)]:
        with pytest.raises(SwarmregError) as info:
            await put(manager, upload, data, start, end, body=b"\xff" * (end - start))
        assert error_code(info) is RANGE_INVALID
    assert upload.meta.ranges == ((0, 1000), (2000, 3000))
    assert upload.data_path.read_bytes() == before
    assert json.loads((upload.dir / "meta.json").read_text())["ranges"] == [[0, 1000], [2000, 3000]]


@pytest.mark.parametrize("body_size", [999, 1001, 0, 5000])
async def test_body_length_must_match_the_range(manager, body_size):
    data = random_bytes(2000)
    digest = Digest.of(data)
    upload = await manager.create(NS, digest)
    with pytest.raises(SwarmregError) as info:
        await put(manager, upload, data, 0, 1000, body=random_bytes(body_size, seed=9))
    assert error_code(info) is SIZE_INVALID
    assert upload.meta.ranges == () and upload.in_flight == []
    # The range is free again: the right bytes can be sent and committed.
    await put(manager, upload, data, 0, 1000)
    await put(manager, upload, data, 1000, 2000)
    assert await manager.commit(upload, digest) == len(data)
    assert manager.store.path(digest).read_bytes() == data


async def test_commit_with_a_gap_lists_the_missing_ranges_and_keeps_the_session(manager):
    data = random_bytes(5000)
    digest = Digest.of(data)
    upload = await manager.create(NS, digest)
    await put(manager, upload, data, 1000, 2000)
    await put(manager, upload, data, 3000, 5000)
    with pytest.raises(SwarmregError) as info:
        await manager.commit(upload, digest)
    assert error_code(info) is RANGE_INVALID
    assert info.value.detail == {"missing": [[0, 1000], [2000, 3000]]}
    assert manager.get(upload.uid, NS, digest) is upload and upload.dir.is_dir()
    assert digest not in manager.store
    await put(manager, upload, data, 0, 1000)
    await put(manager, upload, data, 2000, 3000)
    assert await manager.commit(upload, digest) == len(data)


async def test_commit_with_a_wrong_digest_discards_the_session(manager, tmp_path):
    data = random_bytes(4000)
    claimed = Digest.of(b"other content")
    upload = await manager.create(NS, claimed)
    await put(manager, upload, data, 0, 4000)
    with pytest.raises(SwarmregError) as info:
        await manager.commit(upload, claimed)
    assert error_code(info) is DIGEST_INVALID
    assert not upload.dir.exists()
    with pytest.raises(SwarmregError) as info:
        manager.get(upload.uid, NS, claimed)
    assert error_code(info) is BLOB_UPLOAD_UNKNOWN
    assert blob_files(tmp_path / "store") == {}
    assert list(manager.store.tmp_dir.iterdir()) == []


async def test_range_beyond_max_size_is_too_large(tmp_path):
    manager = make_manager(tmp_path, max_size=1000)
    data = random_bytes(1000)
    upload = await manager.create(NS, Digest.of(data))
    with pytest.raises(SwarmregError) as info:
        await put(manager, upload, data + b"x", 900, 1001)
    assert error_code(info) is TOO_LARGE and info.value.status == 413
    assert upload.meta.ranges == ()
    await put(manager, upload, data, 0, 1000)  # exactly the limit is fine
    assert await manager.commit(upload, Digest.of(data)) == 1000


@pytest.mark.parametrize("case", ["namespace", "digest", "unknown uid", "traversal", "empty", "uid with suffix"])
async def test_get_refuses_anything_but_the_exact_session(manager, case):
    digest = Digest.of(b"x")
    upload = await manager.create(NS, digest)
    uid, namespace, wanted = upload.uid, NS, digest
    if case == "namespace":
        namespace = "library/bar"
    elif case == "digest":
        wanted = Digest.of(b"y")
    elif case == "unknown uid":
        uid = "00000000-0000-4000-8000-000000000000"
    elif case == "traversal":
        uid = "../../etc"
    elif case == "empty":
        uid = ""
    else:
        uid = upload.uid + "/../" + upload.uid
    with pytest.raises(SwarmregError) as info:
        manager.get(uid, namespace, wanted)
    assert error_code(info) is BLOB_UPLOAD_UNKNOWN and info.value.status == 404
    assert manager.get(upload.uid, NS, digest) is upload


async def test_sessions_survive_a_restart_and_commit_there(manager):
    data = random_bytes(9000)
    digest = Digest.of(data)
    upload = await manager.create(NS, digest)
    await put(manager, upload, data, 3000, 6000)
    await put(manager, upload, data, 0, 3000)
    again = reopen(manager)
    resumed = again.get(upload.uid, NS, digest)
    assert resumed.meta == upload.meta and len(again) == 1
    await put(again, resumed, data, 6000, 9000)
    assert await again.commit(resumed, digest) == len(data)
    assert again.store.path(digest).read_bytes() == data


async def test_restart_drops_bytes_of_a_chunk_that_never_finished(manager):
    """Bytes written past the last recorded range (a killed chunk) do not end up in the blob."""
    data = random_bytes(2000)
    digest = Digest.of(data[:1000])
    upload = await manager.create(NS, digest)
    await put(manager, upload, data, 0, 1000)
    with pytest.raises(SwarmregError):  # 500 of the 1000 bytes arrive, then the body ends
        await put(manager, upload, data, 1000, 2000, body=data[1000:1500])
    assert upload.data_path.stat().st_size == 1500
    again = reopen(manager)
    assert await again.commit(again.get(upload.uid, NS, digest), digest) == 1000
    assert again.store.path(digest).read_bytes() == data[:1000]


async def test_load_removes_broken_and_expired_sessions(manager):
    good = await manager.create(NS, Digest.of(b"good"))
    expired = await manager.create(NS, Digest.of(b"expired"))
    meta = json.loads((expired.dir / "meta.json").read_text())
    (expired.dir / "meta.json").write_text(json.dumps({**meta, "updated": time.time() - 7200}))
    no_meta = await manager.create(NS, Digest.of(b"no meta"))
    (no_meta.dir / "meta.json").unlink()
    corrupt = await manager.create(NS, Digest.of(b"corrupt"))
    (corrupt.dir / "meta.json").write_text('{"uid": ')
    wrong_fields = await manager.create(NS, Digest.of(b"wrong fields"))
    (wrong_fields.dir / "meta.json").write_text(json.dumps({"uid": wrong_fields.uid}))
    no_data = await manager.create(NS, Digest.of(b"no data"))
    (no_data.dir / "data").unlink()
    misnamed = await manager.create(NS, Digest.of(b"misnamed"))
    misnamed.dir.rename(manager.root / "not-a-uuid")  # a valid session under a name that is no uid

    again = reopen(manager)
    assert [p.name for p in again.root.iterdir()] == [good.uid]
    assert len(again) == 1 and again.get(good.uid, NS, Digest.of(b"good")).meta == good.meta


async def test_load_drops_a_session_whose_meta_names_another_uid(manager):
    first = await manager.create(NS, Digest.of(b"1"))
    second = await manager.create(NS, Digest.of(b"2"))
    (second.dir / "meta.json").write_bytes((first.dir / "meta.json").read_bytes())
    again = reopen(manager)
    assert [p.name for p in again.root.iterdir()] == [first.uid]


async def test_expire_removes_idle_sessions_past_the_ttl_only(manager):
    idle = await manager.create(NS, Digest.of(b"idle"))
    fresh = await manager.create(NS, Digest.of(b"fresh"))
    idle.meta = attrs.evolve(idle.meta, updated=time.time() - 2 * manager.ttl)  # last written long ago
    assert manager.expire() == 1
    assert not idle.dir.exists() and fresh.dir.is_dir()
    assert manager.get(fresh.uid, NS, Digest.of(b"fresh")) is fresh
    with pytest.raises(SwarmregError):
        manager.get(idle.uid, NS, Digest.of(b"idle"))
    assert manager.expire() == 0
    assert manager.expire(now=time.time() + 2 * manager.ttl) == 1 and len(manager) == 0


async def test_cancelled_write_records_nothing_and_can_be_retried(manager):
    data = random_bytes(10_000)
    digest = Digest.of(data)
    upload = await manager.create(NS, digest)
    await put(manager, upload, data, 0, 2000)
    stalled = trio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield data[2000:7000]  # more than the store's chunk size: written to disk already
        stalled.set()
        await trio.sleep_forever()
        yield data[7000:10_000]

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.write, upload, ByteRange(2000, 10_000), stalling_body())
            await stalled.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert upload.in_flight == [ByteRange(2000, 10_000)]
            # Idle it may be, but a session with a chunk in flight never expires.
            assert manager.expire(now=time.time() + 2 * manager.ttl) == 0
            scope.cancel()
    assert upload.meta.ranges == ((0, 2000),) and upload.in_flight == []
    assert json.loads((upload.dir / "meta.json").read_text())["ranges"] == [[0, 2000]]
    await put(manager, upload, data, 2000, 10_000)
    assert await manager.commit(upload, digest) == len(data)
    assert manager.store.path(digest).read_bytes() == data


# --- Docker-style sessions: no digest until the commit, chunks appended -------------------------

async def test_appended_chunks_commit_under_the_digest_given_at_the_end(manager):
    data = random_bytes(5000, seed=21)
    upload = await manager.create(NS)
    assert (await manager.write(upload, None, chunks(data[:1234]))) == ByteRange(0, 1234)
    assert (await manager.write(upload, None, chunks(data[1234:]))) == ByteRange(1234, 5000)
    assert (await manager.write(upload, None, chunks(b""))) == ByteRange(5000, 5000)
    assert manager.get(upload.uid, NS) is upload
    assert await manager.commit(upload, Digest.of(data)) == len(data)
    assert manager.store.path(Digest.of(data)).read_bytes() == data


async def test_an_append_after_a_gap_is_refused(manager):
    upload = await manager.create(NS)
    await put(manager, upload, b"x" * 20, 10, 20)
    with pytest.raises(SwarmregError) as excinfo:
        await manager.write(upload, None, chunks(b"more"))
    assert error_code(excinfo) is RANGE_INVALID


async def test_an_append_past_the_size_limit_is_too_large_and_records_nothing(tmp_path):
    manager = make_manager(tmp_path, max_size=100)
    upload = await manager.create(NS)
    with pytest.raises(SwarmregError) as excinfo:
        await manager.write(upload, None, chunks(b"y" * 150, 10))
    assert error_code(excinfo) is TOO_LARGE
    assert upload.meta.ranges == ()


async def test_a_delivery_that_fails_keeps_the_session_for_a_retry(manager, tmp_path):
    data = random_bytes(3000, seed=22)
    upload = await manager.create(NS)
    await manager.write(upload, None, chunks(data))
    delivered = []

    async def refuse(path, hexdigest):
        raise SwarmregError(UNAVAILABLE, "the origin is down")

    async def accept(path, hexdigest):
        delivered.append((path.read_bytes(), hexdigest))

    with pytest.raises(SwarmregError):
        await manager.commit(upload, Digest.of(data), deliver=refuse)
    assert manager.get(upload.uid, NS) is upload and not upload.committing
    await manager.commit(upload, Digest.of(data), deliver=accept)
    assert delivered == [(data, Digest.of(data).hex)]
    assert Digest.of(data) not in manager.store, "a delivery replaces the move into the store"


# --- sha512 -----------------------------------------------------------------------------------

async def test_a_session_opened_for_a_sha512_digest_hashes_with_sha512(manager):
    data = random_bytes(30_000, seed=31)
    digest = Digest.of(data, "sha512")
    upload = await manager.create(NS, digest)
    assert upload.hasher.name == "sha512"
    for start in range(0, len(data), 10_000):
        await put(manager, upload, data, start, start + 10_000)
    assert upload.hashed_upto == len(data)
    assert await manager.commit(upload, digest) == len(data)
    assert manager.store.path(digest).read_bytes() == data
    assert manager.store.path(digest).parent.parent.name == "sha512"


async def test_a_session_without_a_digest_commits_under_a_sha512_digest(manager):
    """The digest comes at the commit (a Docker push): the bytes hashed as sha256 on the way are hashed
    again with sha512, in and out of order."""
    data = random_bytes(25_000, seed=32)
    upload = await manager.create(NS)
    await manager.write(upload, None, chunks(data[:9000]))
    await manager.write(upload, None, chunks(data[9000:]))
    assert await manager.commit(upload, Digest.of(data, "sha512")) == len(data)
    assert manager.store.path(Digest.of(data, "sha512")).read_bytes() == data
    assert Digest.of(data) not in manager.store

    gapped = await manager.create(NS)
    await put(manager, gapped, data, 12_000, 25_000)
    await put(manager, gapped, data, 0, 12_000)
    with pytest.raises(SwarmregError) as info:
        await manager.commit(gapped, Digest.of(data[:-1], "sha512"))
    assert error_code(info) is DIGEST_INVALID
    assert info.value.detail["actual"] == str(Digest.of(data, "sha512"))


async def test_a_sha512_session_survives_a_restart(manager):
    data = random_bytes(20_000, seed=33)
    digest = Digest.of(data, "sha512")
    upload = await manager.create(NS, digest)
    await put(manager, upload, data, 0, 8000)
    again = reopen(manager)
    resumed = again.get(upload.uid, NS, digest)
    assert resumed.hasher.name == "sha512"
    await put(again, resumed, data, 8000, 20_000)
    assert await again.commit(resumed, digest) == len(data)
    assert again.store.path(digest).read_bytes() == data


async def test_load_drops_a_session_whose_meta_names_an_unsupported_digest(manager):
    upload = await manager.create(NS, Digest.of(b"x", "sha512"))
    meta = json.loads((upload.dir / "meta.json").read_text())
    (upload.dir / "meta.json").write_text(json.dumps({**meta, "digest": "md5:" + "ab" * 16}))
    again = reopen(manager)
    assert len(again) == 0 and not upload.dir.exists()


# --- bounds: open sessions, cancellation during a write ---------------------------------------

async def test_open_sessions_are_bounded_in_all_and_per_namespace(tmp_path):
    store = BlobStore(tmp_path / "store", fsync=False, chunk_size=4096)
    store.prepare()
    manager = UploadManager(tmp_path / "uploads", store, ttl=3600, max_size=1 << 20,
                            max_sessions=3, max_per_namespace=2)
    manager.load()
    first = await manager.create("a/x")
    await manager.create("a/x", Digest.of(b"known"))
    with pytest.raises(SwarmregError) as refused:
        await manager.create("a/x")
    assert refused.value.code is TOOMANYREQUESTS and int(refused.value.headers["Retry-After"]) > 0
    await manager.create("b/y")
    with pytest.raises(SwarmregError) as full:
        await manager.create("c/z")
    assert full.value.code is TOOMANYREQUESTS and len(manager) == 3
    # Sessions resumed after a restart count too.
    again = UploadManager(manager.root, store, ttl=3600, max_size=1 << 20, max_sessions=3, max_per_namespace=2)
    again.load()
    with pytest.raises(SwarmregError):
        await again.create("a/x")
    await again.cancel(again.get(first.uid, "a/x"))
    await again.create("a/x")
    assert len(again) == 3


async def test_a_cancel_during_a_write_stops_it_and_leaves_nothing(manager):
    data = random_bytes(10_000)
    upload = await manager.create(NS)
    sent = trio.Event()
    go_on = trio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield data[:5000]
        sent.set()
        await go_on.wait()
        yield data[5000:]

    failed: list[SwarmregError] = []

    async def write() -> None:
        with pytest.raises(SwarmregError) as error:
            await manager.write(upload, ByteRange(0, 10_000), body())
        failed.append(error.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await sent.wait()
        await trio.testing.wait_all_tasks_blocked()
        await manager.cancel(upload)
        go_on.set()
    assert failed[0].code is BLOB_UPLOAD_UNKNOWN
    assert len(manager) == 0 and list(manager.root.iterdir()) == []
    with pytest.raises(SwarmregError) as gone:
        manager.get(upload.uid, NS)
    assert gone.value.code is BLOB_UPLOAD_UNKNOWN
