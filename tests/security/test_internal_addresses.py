"""Answers to clients say which service failed, never where it runs: an origin, index or tracker
that cannot be reached is named by its role on the proxy's and the agents' ports (registry and
blob API) and on the tracker's frames; its address goes to the log."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import free_port, make_config, start_daemon
from tests.origin.helpers import assert_error, blob_path, digest_of

NS = "library/unreachable"


def message(response: httpx.Response) -> str:
    text: str = response.json()["errors"][0]["message"]
    return text


def assert_no_address(response: httpx.Response, port: int) -> None:
    assert "127.0.0.1" not in response.text and str(port) not in response.text, response.text


def assert_logged(caplog: pytest.LogCaptureFixture, port: int) -> None:
    assert any(f"127.0.0.1:{port}" in record.getMessage() for record in caplog.records
               if record.name.startswith("swarmreg")), \
        "the address the answer leaves out is in the log"


async def test_the_proxy_names_no_origin_or_index_address(nursery: trio.Nursery, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    origin, index = free_port(), free_port()
    proxy = await start_daemon(nursery, make_config(tmp_path / "proxy", f"proxy.origin=127.0.0.1:{origin}",
                                                    f"proxy.index=127.0.0.1:{index}"), ["proxy"])
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=60) as registry:
        pushed = await registry.post("/v2/team/app/blobs/uploads/")
        assert_error(pushed, 502, "BAD_GATEWAY")
        assert message(pushed) == "origin unreachable: ConnectError"
        assert_no_address(pushed, origin)
        pulled = await registry.get("/v2/team/app/manifests/v1")
        assert_error(pulled, 503, "UNAVAILABLE")
        assert message(pulled) == "index unavailable: ConnectError"
        assert_no_address(pulled, index)
    assert_logged(caplog, origin)
    assert_logged(caplog, index)


async def test_the_agent_names_no_index_address(nursery: trio.Nursery, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    index = free_port()
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"agent.index=127.0.0.1:{index}",
                                                    "agent.tracker=127.0.0.1:9"), ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        response = await registry.get("/v2/team/app/manifests/v1")
        assert_error(response, 503, "UNAVAILABLE")
        assert message(response) == "index unavailable: ConnectError"
        assert_no_address(response, index)
    assert_logged(caplog, index)


async def test_the_agent_names_no_tracker_address(nursery: trio.Nursery, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tracker = free_port()
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", f"agent.tracker=127.0.0.1:{tracker}",
                                                    "agent.tracker_attempts=1"), ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(blob_path(NS, digest_of(b"anything")))
        assert_error(response, 503, "UNAVAILABLE")
        assert message(response) == "tracker unreachable after 1 attempts"
        assert_no_address(response, tracker)
    assert_logged(caplog, tracker)


async def test_the_tracker_names_no_origin_address(nursery: trio.Nursery, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    origin = free_port()
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", f"tracker.origins=['127.0.0.1:{origin}']"),
                                 ["tracker"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={tracker.ready['roles']['tracker']['ws']}"), ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(blob_path(NS, digest_of(b"anything")))
        assert_error(response, 502, "BAD_GATEWAY")
        assert message(response) == "no origin could provide the blob's metainfo: origin unreachable: ConnectError"
        assert_no_address(response, origin)
    assert_logged(caplog, origin)
