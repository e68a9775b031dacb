"""Bounded upload sessions: at most origin.max_sessions open in all and
origin.max_sessions_per_namespace per namespace (429 TOOMANYREQUESTS with Retry-After past
either), and idle sessions removed after origin.upload_ttl by the service's own loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import TOO_LARGE, SwarmregError
from swarmreg.origin.client import OriginClient
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.origin.helpers import assert_error, blob_path, digest_of


@pytest.fixture
async def limited(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    daemon = await start_daemon(nursery, make_config(
        tmp_path / "origin", "origin.max_sessions=5", "origin.max_sessions_per_namespace=3"), ["origin"])
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=30) as client:
        yield client
    await daemon.stop()


async def open_session(client: httpx.AsyncClient, namespace: str) -> httpx.Response:
    return await client.post("/uploads", params={"namespace": namespace})


def assert_too_many(response: httpx.Response) -> None:
    assert_error(response, 429, "TOOMANYREQUESTS")
    assert int(response.headers["Retry-After"]) > 0


async def test_sessions_are_limited_per_namespace_and_in_total(limited: httpx.AsyncClient) -> None:
    opened = []
    for _ in range(3):
        response = await open_session(limited, "team/a")
        assert response.status_code == 200, response.text
        opened.append(response.headers["location"])
    assert_too_many(await open_session(limited, "team/a"))
    # Kraken's uploads of a known digest are sessions too, and count against the same limits.
    assert_too_many(await limited.post(f"{blob_path('team/a', digest_of(b'x'))}/uploads"))
    # Another namespace still has room, until the total is reached.
    assert (await open_session(limited, "team/b")).status_code == 200
    assert (await limited.post(f"{blob_path('team/b', digest_of(b'y'))}/uploads")).status_code == 200
    assert_too_many(await open_session(limited, "team/c"))
    # A finished (here: cancelled) session gives its slot back.
    deleted = await limited.delete(f"/uploads/{opened[0]}", params={"namespace": "team/a"})
    assert deleted.status_code == 204
    assert (await open_session(limited, "team/a")).status_code == 200
    assert_too_many(await open_session(limited, "team/a"))
    # The refused sessions left nothing open: the ones that were are still served.
    status = await limited.get(f"/uploads/{opened[1]}", params={"namespace": "team/a"})
    assert status.status_code == 204


async def test_an_idle_session_expires(nursery: trio.Nursery, tmp_path: Path) -> None:
    daemon: RunningDaemon = await start_daemon(
        nursery, make_config(tmp_path / "origin", "origin.upload_ttl=0.5", "origin.max_sessions_per_namespace=1"),
        ["origin"])
    uploads = Path(daemon.config.layout.uploads)
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=30) as client:
        uid = (await open_session(client, "team/a")).headers["location"]
        assert (uploads / uid).is_dir()
        assert_too_many(await open_session(client, "team/a"))
        with trio.fail_after(10):
            while (await client.get(f"/uploads/{uid}", params={"namespace": "team/a"})).status_code != 404:
                await trio.sleep(0.1)
        assert not (uploads / uid).exists()
        assert (await open_session(client, "team/a")).status_code == 200, "the expired session's slot is free"
    await daemon.stop()


def test_the_defaults_bound_sessions(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.origin.max_sessions == 1000
    assert config.origin.max_sessions_per_namespace == 100
    assert config.origin.upload_ttl == 3600.0


async def test_a_failed_kraken_upload_cancels_its_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    """OriginClient's uploads of a known digest (the proxy's manifests, the CLI's files) cancel
    the session they opened when a PATCH or the PUT fails, instead of leaving it to its TTL."""
    daemon = await start_daemon(nursery, make_config(tmp_path / "origin", "origin.max_upload_size=4"), ["origin"])
    data = b"more than four bytes"
    file = tmp_path / "blob"
    file.write_bytes(data)
    async with OriginClient(Address.parse(daemon.ready["roles"]["origin"]["http"])) as origin:
        with pytest.raises(SwarmregError) as refused:
            await origin.upload_bytes("team/a", Digest.parse(digest_of(data)), data)
        assert refused.value.code is TOO_LARGE
        assert not list(daemon.config.layout.uploads.iterdir())
        with pytest.raises(SwarmregError) as refused:
            await origin.upload_file("team/a", Digest.parse(digest_of(data)), file)
        assert refused.value.code is TOO_LARGE
        assert not list(daemon.config.layout.uploads.iterdir())
    await daemon.stop()
