"""The S3 backend's own cases, against moto's server mode over real HTTP (the shared suite covers
the contract): multipart uploads and what a failed one leaves (nothing), the key layout, each
source of credentials and their precedence, a missing bucket, S3 stopped or too slow, a large
blob in bounded memory, and many uploads of one blob at once."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from swarmreg.backends.base import STREAM_CHUNK
from swarmreg.backends.s3 import S3Backend
from swarmreg.backends.s3_bucket import S3Options
from swarmreg.config import ConfigError, load_config
from swarmreg.digest import Digest
from swarmreg.errors import BACKEND_ERROR, BACKEND_UNAVAILABLE, DIGEST_INVALID, SwarmregError
from swarmreg.sizes import ByteSize
from tests.backends.test_backend_suite import chunks, download, listed, s3_keys
from tests.conftest import random_bytes
from tests.servers.s3 import ADMIN_KEYS, MotoServer

NS = "library/s3"
MiB = 1 << 20
PART = ByteSize(5 * MiB)


def options(server: MotoServer, bucket: str, **changes: Any) -> S3Options:
    base = S3Options(bucket=bucket, endpoint_url=server.endpoint_url, region="us-east-1", part_size=PART,
                     **s3_keys(ADMIN_KEYS))
    return attrs.evolve(base, **changes)


@pytest.fixture
async def backend(moto_server: MotoServer, s3_bucket: str) -> AsyncIterator[S3Backend]:
    built = S3Backend(options(moto_server, s3_bucket, prefix="team/blobs"))
    try:
        yield built
    finally:
        await built.aclose()


async def refused(call: Any, code: Any = BACKEND_ERROR) -> str:
    """The call's SwarmregError message, checking its code."""
    with pytest.raises(SwarmregError) as info:
        await call
    assert info.value.code is code, info.value.message
    return info.value.message


# -- uploads -------------------------------------------------------------------------------------


async def test_a_blob_larger_than_a_part_is_a_multipart_object_at_its_key(moto_server, s3_bucket, backend) -> None:
    large, small = random_bytes(2 * PART + 1234, seed=1), random_bytes(PART - 1, seed=2)
    for data in (large, small):
        assert await backend.upload(NS, Digest.of(data), chunks(data, 1 << 20)) == len(data)
    client = moto_server.client()
    hex_large, hex_small = Digest.of(large).hex, Digest.of(small).hex
    assert moto_server.keys(s3_bucket) == {f"team/blobs/blobs/sha256/{hex_large[:2]}/{hex_large}": len(large),
                                           f"team/blobs/blobs/sha256/{hex_small[:2]}/{hex_small}": len(small)}
    # S3's ETag of a multipart object ends in "-<parts>"; one PutObject's is the content's MD5.
    assert client.head_object(Bucket=s3_bucket, Key=backend.key(Digest.of(large)))["ETag"].endswith('-3"')
    assert client.head_object(Bucket=s3_bucket, Key=backend.key(Digest.of(small)))["ETag"] == (
        f'"{hashlib.md5(small).hexdigest()}"')
    assert await download(backend, Digest.of(large)) == large


async def test_upload_file_goes_up_in_parts_too(moto_server, s3_bucket, backend, tmp_path: Path) -> None:
    data = random_bytes(PART + 77, seed=3)
    source = tmp_path / "blob"
    source.write_bytes(data)
    await backend.upload_file(NS, Digest.of(data), source)
    head = moto_server.client().head_object(Bucket=s3_bucket, Key=backend.key(Digest.of(data)))
    assert head["ETag"].endswith('-2"') and head["ContentLength"] == len(data)
    assert await download(backend, Digest.of(data)) == data


@pytest.mark.parametrize("size", [100_000, 2 * PART + 5], ids=["one-put", "multipart"])
async def test_an_upload_not_matching_its_digest_leaves_nothing(moto_server, s3_bucket, backend, size) -> None:
    claimed = Digest.of(b"what was promised")
    message = await refused(backend.upload(NS, claimed, chunks(random_bytes(size, seed=4), 1 << 20)), DIGEST_INVALID)
    assert "does not match" in message
    assert moto_server.keys(s3_bucket) == {}
    assert moto_server.pending_uploads(s3_bucket) == [], "the multipart upload was aborted"


async def test_an_upload_whose_stream_fails_or_is_cancelled_leaves_nothing(moto_server, s3_bucket, backend) -> None:
    data = random_bytes(3 * PART, seed=5)

    async def failing() -> AsyncIterator[bytes]:
        yield data[:2 * PART]  # two parts go up first
        raise SwarmregError(BACKEND_ERROR, "the client went away")

    async def stalling() -> AsyncIterator[bytes]:
        yield data[:2 * PART]
        await trio.sleep_forever()

    assert "went away" in await refused(backend.upload(NS, Digest.of(data), failing()))
    with trio.move_on_after(3) as waited:
        await backend.upload(NS, Digest.of(data), stalling())
    assert waited.cancelled_caught
    assert moto_server.keys(s3_bucket) == {}
    assert moto_server.pending_uploads(s3_bucket) == []
    assert await backend.stat(NS, Digest.of(data)) is None
    # Cancelled wherever it is (reading, creating the upload, sending a part, completing it): the
    # blob is there whole, or not at all, and no upload is left open.
    for deadline in (0.01, 0.05, 0.1, 0.2, 0.4):
        with trio.move_on_after(deadline):
            await backend.upload(NS, Digest.of(data), chunks(data, 1 << 20))
        assert moto_server.pending_uploads(s3_bucket) == [], deadline
        if moto_server.keys(s3_bucket):
            assert await download(backend, Digest.of(data)) == data
            await backend.delete(NS, Digest.of(data))


async def test_concurrent_uploads_of_one_blob_store_it_once(moto_server, s3_bucket, backend, tmp_path) -> None:
    for data in (random_bytes(2 * PART + 3, seed=6), random_bytes(70_000, seed=7)):
        digest = Digest.of(data)
        source = tmp_path / digest.hex
        source.write_bytes(data)
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(backend.upload, NS, digest, chunks(data, 1 << 20))
                if n % 2:
                    nursery.start_soon(backend.upload_file, NS, digest, source)
        assert await download(backend, digest) == data
    assert len(moto_server.keys(s3_bucket)) == 2
    assert moto_server.pending_uploads(s3_bucket) == []


async def test_committing_a_held_blob_again_renews_its_age(backend, tmp_path) -> None:
    """The garbage collector's grace period counts from the last commit, as on a filesystem."""
    data = random_bytes(40_000, seed=8)
    source = tmp_path / "blob"
    source.write_bytes(data)
    await backend.upload_file(NS, Digest.of(data), source)
    first = await backend.modified(NS, Digest.of(data))
    await trio.sleep(1.1)  # LastModified counts seconds
    await backend.upload_file(NS, Digest.of(data), source)
    again = await backend.modified(NS, Digest.of(data))
    assert first is not None and again is not None and again > first
    assert await download(backend, Digest.of(data)) == data


# -- the key layout ------------------------------------------------------------------------------------


async def test_list_sees_only_blobs_under_its_own_prefix(moto_server, s3_bucket, backend) -> None:
    data = b"one blob"
    await backend.upload(NS, Digest.of(data), chunks(data))
    other = S3Backend(options(moto_server, s3_bucket, prefix="team/blobs2"))
    try:
        await other.upload(NS, Digest.of(b"another"), chunks(b"another"))
        assert await listed(other) == {Digest.of(b"another")}
    finally:
        await other.aclose()
    hex_ = Digest.of(b"x").hex
    client = moto_server.client()
    for junk in ("team/blobs/blobs/sha256/zz/not-a-digest", f"team/blobs/blobs/sha256/00/{hex_}",  # wrong shard
                 f"team/blobs/blobs/md5/{hex_[:2]}/{hex_}", "team/blobs/blobs/sha256/", "team/blobs/readme"):
        client.put_object(Bucket=s3_bucket, Key=junk, Body=b"junk")
    assert await listed(backend) == {Digest.of(data)}


async def test_list_pages_through_more_than_a_thousand_keys(moto_server, s3_bucket, backend) -> None:
    client = moto_server.client()
    digests = {Digest.of(str(n).encode()) for n in range(1005)}

    def put_all() -> None:
        for digest in digests:
            client.put_object(Bucket=s3_bucket, Key=backend.key(digest), Body=b"")

    await trio.to_thread.run_sync(put_all)
    assert await listed(backend) == digests


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bucket", '"a"', "bucket name"),
    ("bucket", '"bad/bucket"', "bucket name"),
    ("prefix", '"/abs"', "prefix"),
    ("prefix", '"a//b"', "prefix"),
    ("prefix", '"a/../b"', "prefix"),
    ("prefix", '"a/"', "prefix"),
    ("endpoint_url", '"ftp://host"', "endpoint_url"),
    ("endpoint_url", '"http://user:pw@host"', "endpoint_url"),
    ("part_size", '"4MiB"', "part_size"),
    ("access_key_id", '"AKIA"', "both or neither"),
    ("session_token", '"token"', "goes with"),
    ("region", '"eu west"', "region name"),
])
def test_bad_options_are_refused_with_their_key(key: str, value: str, message: str) -> None:
    entry = {"bucket": '"blobs"', key: value}
    table = ", ".join(f"{k}={v}" for k, v in entry.items())
    with pytest.raises(ConfigError) as info:
        load_config(None, [f'backends=[{{type="s3", options={{{table}}}}}]'])
    assert f"backends[0].options.{key}" in str(info.value) or message in str(info.value)
    assert message in str(info.value)


def test_the_bucket_is_required() -> None:
    with pytest.raises(ConfigError, match=r"backends\[0\]\.options\.bucket"):
        load_config(None, ['backends=[{type="s3"}]'])


# -- credentials -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checking_server() -> Iterator[tuple[MotoServer, str, dict[str, str]]]:
    """A moto server that checks credentials: it, its bucket and the keys it takes."""
    server = MotoServer()
    server.start()
    try:
        bucket = server.create_bucket()
        yield server, bucket, server.check_credentials()
    finally:
        server.stop()


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS_* variables, no ~/.aws files and no instance metadata: only what a test sets."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


async def round_trip(built: S3Backend, seed: int) -> None:
    data = random_bytes(10_000, seed=seed)
    try:
        await built.upload(NS, Digest.of(data), chunks(data))
        assert await download(built, Digest.of(data)) == data
    finally:
        await built.aclose()


async def test_keys_in_the_configuration_are_used_and_wrong_ones_refused(checking_server) -> None:
    server, bucket, keys = checking_server
    await round_trip(S3Backend(options(server, bucket, **s3_keys(keys))), 10)
    wrong_secret = "wrong-secret-key-0123456789"
    for wrong in ({**keys, "aws_secret_access_key": wrong_secret},
                  {"aws_access_key_id": "AKIAUNKNOWNKEY000000", "aws_secret_access_key": wrong_secret}):
        built = S3Backend(options(server, bucket, **s3_keys(wrong)))
        try:
            for call in (built.stat(NS, Digest.of(b"x")), built.upload(NS, Digest.of(b"x"), chunks(b"x"))):
                message = await refused(call)
                assert "refused the credentials" in message and bucket in message
                assert wrong_secret not in message and wrong["aws_access_key_id"] not in message
        finally:
            await built.aclose()


async def test_keys_from_the_environment(checking_server, no_ambient_credentials) -> None:
    server, bucket, keys = checking_server
    no_ambient_credentials.setenv("AWS_ACCESS_KEY_ID", keys["aws_access_key_id"])
    no_ambient_credentials.setenv("AWS_SECRET_ACCESS_KEY", keys["aws_secret_access_key"])
    await round_trip(S3Backend(options(server, bucket, access_key_id="", secret_access_key="")), 11)
    # Keys in the configuration come first.
    built = S3Backend(options(server, bucket, access_key_id=keys["aws_access_key_id"], secret_access_key="wrong"))
    try:
        assert "refused the credentials" in await refused(built.stat(NS, Digest.of(b"x")))
    finally:
        await built.aclose()


async def test_keys_from_a_credentials_file_and_its_profile(checking_server, no_ambient_credentials,
                                                           tmp_path: Path) -> None:
    server, bucket, keys = checking_server
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = AKIAUNKNOWNKEY000000\naws_secret_access_key = wrong\n\n"
                    f"[swarmreg]\naws_access_key_id = {keys['aws_access_key_id']}\n"
                    f"aws_secret_access_key = {keys['aws_secret_access_key']}\n")
    # The file comes before the environment's keys (wrong ones here).
    no_ambient_credentials.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    no_ambient_credentials.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    unset = {"access_key_id": "", "secret_access_key": ""}
    await round_trip(S3Backend(options(server, bucket, **unset, credentials_file=str(path), profile="swarmreg")), 12)
    cases = [({"credentials_file": str(path)}, "refused the credentials"),  # the default profile's
             ({"credentials_file": str(path), "profile": "absent"}, "has no profile 'absent'"),
             ({"credentials_file": str(tmp_path / "missing")}, "credentials_file cannot be read")]
    for changes, message in cases:
        built = S3Backend(options(server, bucket, **unset, **changes))
        try:
            text = await refused(built.stat(NS, Digest.of(b"x")))
            assert message in text and str(tmp_path) not in text, text
        finally:
            await built.aclose()


async def test_no_credentials_anywhere_says_where_to_put_them(moto_server, s3_bucket, no_ambient_credentials) -> None:
    built = S3Backend(options(moto_server, s3_bucket, access_key_id="", secret_access_key=""))
    try:
        assert "no credentials found" in await refused(built.stat(NS, Digest.of(b"x")))
    finally:
        await built.aclose()


# -- a missing bucket, S3 down or slow --------------------------------------------------------------------


async def test_a_missing_bucket_is_named(moto_server) -> None:
    built = S3Backend(options(moto_server, "no-such-bucket-here"))
    try:
        digest = Digest.of(b"x")
        for call in (built.stat(NS, digest), built.download(NS, digest), built.upload(NS, digest, chunks(b"x")),
                     built.delete(NS, digest), listed(built)):
            assert "S3 bucket no-such-bucket-here does not exist" in await refused(call)
    finally:
        await built.aclose()


async def test_s3_stopped_mid_read_and_between_calls_is_a_clear_error_until_it_is_back(tmp_path) -> None:
    server = MotoServer()
    server.start()
    try:
        bucket = server.create_bucket()
        built = S3Backend(options(server, bucket, attempts=2))
        data = random_bytes(4 * PART, seed=13)
        digest = Digest.of(data)
        await built.upload(NS, digest, chunks(data, 1 << 20))
        stream = await built.download(NS, digest)
        assert stream is not None
        with trio.fail_after(30):
            async with stream:
                pieces = aiter(stream)
                await anext(pieces)
                server.stop()
                with pytest.raises(SwarmregError) as info:
                    async for _chunk in pieces:
                        pass
        assert info.value.code is BACKEND_UNAVAILABLE and bucket in info.value.message
        with trio.fail_after(30):
            for call in (built.stat(NS, digest), built.upload(NS, Digest.of(b"y"), chunks(b"y")), listed(built)):
                assert "cannot connect to the endpoint" in await refused(call, BACKEND_UNAVAILABLE)
        server.start()  # on the same port, empty: moto keeps its buckets in memory
        server.client().create_bucket(Bucket=bucket)
        assert await built.stat(NS, digest) is None
        await built.upload(NS, digest, chunks(data, 1 << 20))
        assert await download(built, digest) == data
        await built.aclose()
    finally:
        server.stop()


async def test_a_silent_s3_times_out_and_never_takes_more_connections_than_allowed(nursery) -> None:
    """An endpoint that accepts connections and never answers: each call fails after read_timeout
    with BACKEND_UNAVAILABLE; no more than ``connections`` are open at once; a cancelled call
    returns at once, its thread left to time out."""
    open_now, most = 0, 0

    async def silent(stream: trio.SocketStream) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while await stream.receive_some():  # until the client hangs up
                pass
        except trio.BrokenResourceError:
            pass
        finally:
            open_now -= 1

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    built = S3Backend(S3Options(bucket="slow", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                                read_timeout=1, attempts=1, connections=2, access_key_id="k", secret_access_key="s"))
    try:
        errors: list[SwarmregError] = []

        async def stat(n: int) -> None:
            try:
                await built.stat(NS, Digest.of(str(n).encode()))
            except SwarmregError as error:
                errors.append(error)

        with trio.fail_after(15):
            async with trio.open_nursery() as calls:
                for n in range(5):
                    calls.start_soon(stat, n)
        assert [error.code for error in errors] == [BACKEND_UNAVAILABLE] * 5
        assert "no answer within read_timeout (1 s)" in errors[0].message
        assert most == 2, most
        with trio.fail_after(0.5):
            with trio.move_on_after(0.1):
                await built.stat(NS, Digest.of(b"cancelled"))
    finally:
        await built.aclose()


# -- memory ------------------------------------------------------------------------------------------


def _generated(size: int, seed: int) -> Iterator[bytes]:
    generator = random.Random(seed)
    for offset in range(0, size, MiB):
        yield generator.randbytes(min(MiB, size - offset))


async def test_a_large_blob_goes_up_and_down_in_bounded_memory(moto_server, s3_bucket, backend) -> None:
    size = 64 * MiB
    hasher = hashlib.sha256()
    for chunk in _generated(size, 14):
        hasher.update(chunk)
    digest = Digest(hasher.hexdigest())

    async def stream() -> AsyncIterator[bytes]:
        for chunk in _generated(size, 14):
            yield chunk

    assert await backend.stat(NS, digest) is None  # the client is made (botocore's models loaded) first
    tracemalloc.start()
    try:
        assert await backend.upload(NS, digest, stream()) == size
        _, uploading = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before = len(moto_server.requests)
        blob = await backend.download(NS, digest)
        assert blob is not None
        check, received = hashlib.sha256(), 0
        async with blob:
            async for chunk in blob:
                check.update(chunk)
                received += len(chunk)
        _, downloading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size and check.hexdigest() == digest.hex
    # A part (and the chunk being added to it) on the way up; on the way down a chunk, the one
    # the consumer holds and urllib3's buffers as it reads the next.
    assert uploading < 2 * PART, uploading
    assert downloading < 3 * STREAM_CHUNK, downloading
    ranged = [r for r in moto_server.requests[before:] if r.method == "GET" and r.status == 206]
    assert len(ranged) == size // PART + 1


def test_debug_logging_keeps_botocore_quiet(moto_server, s3_bucket) -> None:
    """At log.level = "debug", botocore's own debug records (request bodies, the signed headers
    with a session token) stay out of the log."""
    import subprocess
    import sys

    token = "session-token-never-logged-4242"
    script = f"""
import trio
from swarmreg.logs import setup_logging
from swarmreg.backends.s3 import S3Backend
from swarmreg.backends.s3_bucket import S3Options
from swarmreg.digest import Digest
setup_logging("text", "debug")
backend = S3Backend(S3Options(bucket={s3_bucket!r}, endpoint_url={moto_server.endpoint_url!r}, region="us-east-1",
                              access_key_id="k", secret_access_key="s", session_token={token!r}))
print(trio.run(backend.stat, "ns", Digest.of(b"x")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert token not in done.stderr and "botocore" not in done.stderr
