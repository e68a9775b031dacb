"""The origin's digest-less upload sessions (the proxy streams Docker pushes into them), through
both clients of the origin interface: OriginClient over HTTP, and LocalOrigin in-process (the
proxy's, when the origin runs in its daemon)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, SwarmregError
from swarmreg.origin.client import OriginClient
from swarmreg.origin.local import LocalOrigin
from tests.conftest import RunningDaemon, blob_files, random_bytes
from tests.origin.helpers import assert_error

NS = "team/app"


@pytest.fixture(params=["http", "local"])
async def client(request: pytest.FixtureRequest, origin: RunningDaemon) -> AsyncIterator[OriginClient]:
    """A client of ``origin``: over HTTP, or in-process on its origin service."""
    address = Address.parse(origin.ready["roles"]["origin"]["http"])
    if request.param == "http":
        async with OriginClient(address) as http:
            yield http
        return
    service = origin.daemon.node.local_origin
    assert service is not None
    async with LocalOrigin(service, address, address) as local:
        yield local
        assert local.calls > 0, "every call went over HTTP"


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def test_append_status_and_finish(origin: RunningDaemon, client: OriginClient) -> None:
    data = random_bytes(3 << 20)
    uid = await client.open_session(NS)
    assert await client.status(uid, NS) == 0
    assert await client.append(uid, NS, chunks(data[:1_000_000]), None) == 1_000_000  # chunked
    assert await client.append(uid, NS, chunks(data[1_000_000:]), len(data) - 1_000_000) == len(data)
    assert await client.status(uid, NS) == len(data)
    assert await client.finish(uid, NS, Digest.of(data)) == len(data)
    hex_ = Digest.of(data).hex
    assert blob_files(Path(origin.config.data_dir)) == {hex_: len(data)}
    assert blob_files(Path(origin.config.data_dir) / "backend") == {hex_: len(data)}, "written through"


async def test_a_wrong_digest_discards_the_session(origin: RunningDaemon, client: OriginClient) -> None:
    uid = await client.open_session(NS)
    await client.append(uid, NS, chunks(b"actual bytes"), None)
    with pytest.raises(SwarmregError) as wrong:
        await client.finish(uid, NS, Digest.of(b"other bytes"))
    assert wrong.value.code.code == "DIGEST_INVALID"
    with pytest.raises(SwarmregError) as gone:
        await client.status(uid, NS)
    assert gone.value.code.code == "BLOB_UPLOAD_UNKNOWN"
    assert blob_files(Path(origin.config.data_dir)) == {}


async def test_cancel_and_abandon_drop_the_session(origin: RunningDaemon, client: OriginClient) -> None:
    for drop in (client.cancel, client.abandon):
        uid = await client.open_session(NS)
        await client.append(uid, NS, chunks(b"some bytes"), None)
        await drop(uid, NS)
        with pytest.raises(SwarmregError) as gone:
            await client.status(uid, NS)
        assert gone.value.code.code == "BLOB_UPLOAD_UNKNOWN"
    await client.abandon(uid, NS)  # a session already gone is fine
    assert not list(origin.config.layout.uploads.iterdir())


async def test_a_failed_body_records_nothing(origin: RunningDaemon, client: OriginClient) -> None:
    """A body that fails midway (a client that hung up) adds none of its bytes to the session."""
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        raise SwarmregError(BAD_REQUEST, "the client went away")

    uid = await client.open_session(NS)
    await client.append(uid, NS, chunks(b"first"), None)
    with pytest.raises(SwarmregError):
        await client.append(uid, NS, broken(), None)
    assert await client.status(uid, NS) == len(b"first")


async def test_small_uploads_and_a_second_upload_of_the_same_blob(origin: RunningDaemon,
                                                                  client: OriginClient) -> None:
    data = b'{"a manifest": true}'
    await client.upload_bytes(NS, Digest.of(data), data)
    await client.upload_bytes(NS, Digest.of(data), data)  # held: nothing to upload, no error
    assert await client.read(NS, Digest.of(data)) == data
    assert blob_files(Path(origin.config.data_dir) / "backend") == {Digest.of(data).hex: len(data)}
    assert not list(origin.config.layout.uploads.iterdir())


async def test_a_namespace_is_checked_in_process_too(client: OriginClient) -> None:
    with pytest.raises(SwarmregError) as refused:
        await client.open_session("../etc")
    assert refused.value.code.code == "NAME_INVALID"
    uid = await client.open_session(NS)
    with pytest.raises(SwarmregError) as other:
        await client.status(uid, "other/ns")
    assert other.value.code.code == "BLOB_UPLOAD_UNKNOWN"
    await client.cancel(uid, NS)


async def test_an_origin_elsewhere_is_asked_over_http(origin: RunningDaemon) -> None:
    """A LocalOrigin whose ring does not pick this daemon's origin sends every call over HTTP."""
    address = Address.parse(origin.ready["roles"]["origin"]["http"])
    service = origin.daemon.node.local_origin
    assert service is not None
    data = random_bytes(1 << 20, seed=3)
    async with LocalOrigin(service, Address("127.0.0.1", 1), address) as elsewhere:
        uid = await elsewhere.open_session(NS)
        await elsewhere.append(uid, NS, chunks(data), len(data))
        assert await elsewhere.finish(uid, NS, Digest.of(data)) == len(data)
        assert elsewhere.calls == 0
    assert blob_files(Path(origin.config.data_dir))[Digest.of(data).hex] == len(data)


async def test_a_session_belongs_to_its_namespace_and_can_be_cancelled(origin_client: httpx.AsyncClient) -> None:
    opened = await origin_client.post("/uploads", params={"namespace": NS})
    uid = opened.headers["location"]
    assert_error(await origin_client.get(f"/uploads/{uid}", params={"namespace": "other/ns"}),
                 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await origin_client.post("/uploads", params={"namespace": "../etc"}), 400, "NAME_INVALID")
    assert (await origin_client.delete(f"/uploads/{uid}", params={"namespace": NS})).status_code == 204
    assert_error(await origin_client.get(f"/uploads/{uid}", params={"namespace": NS}), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_the_client_refuses_ids_that_are_not_upload_ids(client: OriginClient) -> None:
    await client.cancel(await client.open_session(NS), NS)  # (LocalOrigin counts a call)
    for uid in ("../health", "x", "00000000-0000-4000-8000-000000000000/../../"):
        with pytest.raises(SwarmregError) as refused:
            await client.status(uid, NS)
        assert refused.value.code.code == "BLOB_UPLOAD_UNKNOWN"
