"""Transfers longer than a minute are not cut (Quart's 60 s body/response timeouts are off)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, random_bytes
from tests.origin.helpers import RawRequest, blob_path, commit, digest_of, start_upload, upload_blob

NS = "library/slow"
MINUTE = 60.0


@pytest.mark.slow
@pytest.mark.timeout(600)  # takes over a minute by design, several on a loaded machine
async def test_slow_upload_and_slow_download_take_over_a_minute_and_complete(
        origin_client: httpx.AsyncClient, origin: RunningDaemon) -> None:
    address = origin.ready["roles"]["origin"]["http"]
    stored = random_bytes(44 << 20, seed=1)  # ~70 s at 640 KiB/s
    stored_digest = await upload_blob(origin_client, NS, stored, chunk=8 << 20)
    durations = {}

    async def slow_download() -> None:
        started = trio.current_time()
        raw = await RawRequest.open(address, "GET", blob_path(NS, stored_digest), {})
        hasher, received = hashlib.sha256(), 0
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += await raw.stream.receive_some(65536)
        head, _, body = buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        hasher.update(body)
        received += len(body)
        while received < len(stored):
            await trio.sleep(0.1)  # about 640 KiB/s
            data = await raw.stream.receive_some(65536)
            assert data, "the server cut the response"
            hasher.update(data)
            received += len(data)
        await raw.aclose()
        assert "sha256:" + hasher.hexdigest() == stored_digest
        durations["download"] = trio.current_time() - started

    async def slow_upload() -> None:
        data = random_bytes(1 << 20, seed=2)
        digest = digest_of(data)
        uid = await start_upload(origin_client, NS, digest)
        started = trio.current_time()
        raw = await RawRequest.open(address, "PATCH", f"{blob_path(NS, digest)}/uploads/{uid}",
                                    {"Content-Range": f"0,{len(data)}", "Content-Length": str(len(data))})
        piece = len(data) // 130
        for offset in range(0, len(data), piece):
            await raw.send(data[offset:offset + piece])
            await trio.sleep(0.5)
        status, _ = await raw.response()
        await raw.aclose()
        durations["upload"] = trio.current_time() - started
        assert status == 200
        assert (await commit(origin_client, NS, digest, uid)).status_code == 200

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_download)
        nursery.start_soon(slow_upload)
    # Not a speed assertion: it checks that the test exercised what it is meant to.
    assert min(durations.values()) > MINUTE, durations
