"""The origin's digest-less upload sessions (the proxy streams Docker pushes into them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.origin.client import OriginClient
from tests.conftest import RunningDaemon, blob_files, random_bytes
from tests.origin.helpers import assert_error

NS = "team/app"


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def test_append_status_and_finish(origin: RunningDaemon) -> None:
    data = random_bytes(3 << 20)
    async with OriginClient(Address.parse(origin.ready["roles"]["origin"]["http"])) as client:
        uid = await client.open_session(NS)
        assert await client.status(uid, NS) == 0
        assert await client.append(uid, NS, chunks(data[:1_000_000]), None) == 1_000_000  # chunked
        assert await client.append(uid, NS, chunks(data[1_000_000:]), len(data) - 1_000_000) == len(data)
        assert await client.status(uid, NS) == len(data)
        assert await client.finish(uid, NS, Digest.of(data)) == len(data)
    hex_ = Digest.of(data).hex
    assert blob_files(Path(origin.config.data_dir)) == {hex_: len(data)}
    assert blob_files(Path(origin.config.data_dir) / "backend") == {hex_: len(data)}, "written through"


async def test_a_wrong_digest_discards_the_session(origin: RunningDaemon) -> None:
    async with OriginClient(Address.parse(origin.ready["roles"]["origin"]["http"])) as client:
        uid = await client.open_session(NS)
        await client.append(uid, NS, chunks(b"actual bytes"), None)
        with pytest.raises(SwarmregError) as wrong:
            await client.finish(uid, NS, Digest.of(b"other bytes"))
        assert wrong.value.code.code == "DIGEST_INVALID"
        with pytest.raises(SwarmregError) as gone:
            await client.status(uid, NS)
        assert gone.value.code.code == "BLOB_UPLOAD_UNKNOWN"
    assert blob_files(Path(origin.config.data_dir)) == {}


async def test_a_session_belongs_to_its_namespace_and_can_be_cancelled(origin_client: httpx.AsyncClient) -> None:
    opened = await origin_client.post("/uploads", params={"namespace": NS})
    uid = opened.headers["location"]
    assert_error(await origin_client.get(f"/uploads/{uid}", params={"namespace": "other/ns"}),
                 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await origin_client.post("/uploads", params={"namespace": "../etc"}), 400, "NAME_INVALID")
    assert (await origin_client.delete(f"/uploads/{uid}", params={"namespace": NS})).status_code == 204
    assert_error(await origin_client.get(f"/uploads/{uid}", params={"namespace": NS}), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_the_client_refuses_ids_that_are_not_upload_ids(origin: RunningDaemon) -> None:
    async with OriginClient(Address.parse(origin.ready["roles"]["origin"]["http"])) as client:
        for uid in ("../health", "x", "00000000-0000-4000-8000-000000000000/../../"):
            with pytest.raises(SwarmregError) as refused:
                await client.status(uid, NS)
            assert refused.value.code.code == "BLOB_UPLOAD_UNKNOWN"
