"""A herd's proxy streams pushes into the origin of its own daemon in-process (swarmreg.origin.local)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, blob_files, make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_image

REPO = "team/app"


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "index", "proxy"])
    yield running
    await running.stop()


def requests(caplog: pytest.LogCaptureFixture, role: str) -> list[str]:
    """The request lines (``PATCH /path 1.1``) of ``role``'s access log so far."""
    return [record.getMessage().split('"')[1] for record in caplog.records
            if record.name == f"swarmreg.access.{role}"]


async def test_a_push_reaches_the_origin_without_http(herd: RunningDaemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="swarmreg.access")
    layer = random_bytes(3 << 20, seed=17)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as registry:
        # A chunked push (POST, PATCH, PUT), then monolithic ones and the manifest.
        started = await registry.post(f"/v2/{REPO}/blobs/uploads/")
        assert started.status_code == 202, started.text
        patched = await registry.patch(started.headers["location"], content=layer)
        assert patched.status_code == 202, patched.text
        finished = await registry.put(patched.headers["location"], params={"digest": digest_of(layer)})
        assert finished.status_code == 201, finished.text
        await push_image(registry, REPO, "v1", [layer])
        assert (await registry.get(f"/v2/{REPO}/blobs/{digest_of(layer)}")).content == layer
    # The blob GET goes to the origin over HTTP (so its access log is on); no upload does.
    with trio.fail_after(5):  # hypercorn logs a request once its response is sent
        while not (any("/manifests/v1" in line for line in requests(caplog, "proxy"))
                   and any(line.startswith("GET /namespace/") for line in requests(caplog, "origin"))):
            await trio.sleep(0.01)
    assert any(line.startswith("PATCH /v2/") for line in requests(caplog, "proxy"))
    origin_lines = requests(caplog, "origin")
    assert not [line for line in origin_lines if "/uploads" in line], origin_lines
    assert blob_files(Path(herd.config.data_dir))[digest_of(layer).removeprefix("sha256:")] == len(layer)
