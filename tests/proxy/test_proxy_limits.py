"""The proxy relays the origin's 429 TOOMANYREQUESTS for upload sessions, Retry-After included."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_daemon
from tests.origin.helpers import RawRequest, assert_error
from tests.proxy.helpers import push_blob


async def test_the_proxy_relays_429_with_retry_after(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", "origin.max_sessions=3", "origin.max_sessions_per_namespace=2"),
        ["origin", "tracker", "index", "proxy"])
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30) as registry:
        opened = []
        for _ in range(2):
            response = await registry.post("/v2/team/a/blobs/uploads/")
            assert response.status_code == 202, response.text
            opened.append(response.headers["location"])
        refused = await registry.post("/v2/team/a/blobs/uploads/")
        assert_error(refused, 429, "TOOMANYREQUESTS")
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        # A monolithic push needs a session too.
        monolithic = await registry.post("/v2/team/a/blobs/uploads/", params={"digest": "sha256:" + "0" * 64},
                                         content=b"x")
        assert_error(monolithic, 429, "TOOMANYREQUESTS")
        assert "Retry-After" in monolithic.headers
        # Another repository has room until the origin's total is reached.
        assert (await registry.post("/v2/team/b/blobs/uploads/")).status_code == 202
        assert_error(await registry.post("/v2/team/c/blobs/uploads/"), 429, "TOOMANYREQUESTS")
        # A cancelled session frees its slot; a finished push (its session committed) does too.
        assert (await registry.delete(opened[0])).status_code == 204
        await push_blob(registry, "team/a", b"a layer")
        await push_blob(registry, "team/a", b"another layer")


async def test_a_failed_monolithic_push_frees_its_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A POST ?digest= opens a session at the origin for its body: when the body fails (a bad
    Content-Range, a client that hangs up mid-body), the session goes with it, or a careless
    client would fill the repository's sessions (429 for everyone) for origin.upload_ttl."""
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", "origin.max_sessions_per_namespace=2"), ["origin", "index", "proxy"])
    uploads = herd.config.layout.uploads
    digest = "sha256:" + "0" * 64
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30) as registry:
        for _ in range(3):
            refused = await registry.post("/v2/team/a/blobs/uploads/", params={"digest": digest}, content=b"xyz",
                                          headers={"Content-Range": "5-7"})
            assert_error(refused, 416, "RANGE_INVALID")
        assert not list(uploads.iterdir())
        for _ in range(3):  # a client that sends part of its body, then hangs up
            raw = await RawRequest.open(herd.ready["roles"]["proxy"]["http"], "POST",
                                        f"/v2/team/a/blobs/uploads/?digest={digest}", {"Content-Length": "1000"})
            await raw.send(b"abc")
            with trio.fail_after(10):
                while not list(uploads.iterdir()):  # the session is open, its body streaming
                    await trio.sleep(0.01)
            await raw.aclose()
            with trio.fail_after(10):
                while list(uploads.iterdir()):
                    await trio.sleep(0.01)
        for _ in range(2):
            assert (await registry.post("/v2/team/a/blobs/uploads/")).status_code == 202
