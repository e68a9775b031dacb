"""Replication survives restarts, with daemons as child processes killed with SIGKILL: the sending
cluster's daemon killed mid-queue and started again loses nothing; the remote cluster killed while
a queue of several tags drains, and started again on the same data directory and ports, gets
everything. The sending index on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from swarmreg.devcluster import DaemonProcess
from tests.conftest import random_bytes
from tests.proxy.helpers import digest_of, push_image
from tests.replication.helpers import HERD, blob_at, fixed_ports, listen_url, pending, rule, wait_for_tag

pytestmark = pytest.mark.slow

TAGS = 10
LAYER = 4 << 20


async def push_tags(proxy: str, count: int = TAGS) -> list[tuple[str, bytes, bytes]]:
    """``count`` tags of team/app, each an image of its own 4 MiB layer: (digest, manifest, layer)."""
    pushed = []
    async with httpx.AsyncClient(base_url=proxy, timeout=60) as client:
        for n in range(count):
            layer = random_bytes(LAYER, seed=n)
            digest, manifest = await push_image(client, "team/app", f"v{n}", [layer])
            pushed.append((digest, manifest, layer))
    return pushed


async def arrived(proxy: str, digest: str, n: int) -> bool:
    try:
        async with httpx.AsyncClient(base_url=proxy, timeout=10) as client:
            answer = await client.head(f"/v2/team/app/manifests/v{n}", headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and answer.headers.get("docker-content-digest") == digest


async def all_arrived(proxy: str, pushed: list[tuple[str, bytes, bytes]]) -> None:
    for n, (digest, manifest, layer) in enumerate(pushed):
        assert await wait_for_tag(proxy, "team/app", f"v{n}", digest, timeout=120) == manifest
        pulled = await blob_at(proxy, "team/app", digest_of(layer))
        assert pulled.status_code == 200 and pulled.content == layer, f"v{n}'s layer"


async def some_arrived(proxy: str, pushed: list[tuple[str, bytes, bytes]]) -> int:
    """Wait until the first tag arrived; how many had then."""
    with trio.fail_after(120):
        while not await arrived(proxy, pushed[0][0], 0):
            await trio.sleep(0.05)
    return sum([await arrived(proxy, digest, n) for n, (digest, _, _) in enumerate(pushed)])


async def test_the_remote_killed_while_the_queue_drains_gets_everything_once_it_is_back(
        spawn: Any, index_database: str) -> None:
    ports = fixed_ports(HERD)
    b: DaemonProcess = await spawn("b", HERD, *ports, "store.fsync=false")
    remote = listen_url(ports)
    # A stops sending at once (B down), then pushes its whole queue once B is up.
    a: DaemonProcess = await spawn("a", HERD, rule(remote), f"index.database={index_database}", "store.fsync=false")
    b.kill()
    await b.wait()
    pushed = await push_tags(a.url("proxy"))
    await b.start()
    done = await some_arrived(remote, pushed)
    b.kill()  # mid-queue: some tags there, the rest queued or on the way
    await b.wait()
    assert done < TAGS, "the queue had drained before the kill: nothing tested"
    left = await pending(a.url("index"))
    assert left > 0
    await b.start()
    await all_arrived(remote, pushed)
    with trio.fail_after(60):
        while await pending(a.url("index")):
            await trio.sleep(0.2)


async def test_the_sending_daemon_killed_mid_queue_loses_nothing(spawn: Any, index_database: str) -> None:
    ports = fixed_ports(HERD)
    remote = listen_url(ports)
    a_ports = fixed_ports(HERD)
    a: DaemonProcess = await spawn("a", HERD, *a_ports, rule(remote), f"index.database={index_database}")
    pushed = await push_tags(listen_url(a_ports))  # queued: B is not up yet
    b: DaemonProcess = await spawn("b", HERD, *ports, "store.fsync=false")
    done = await some_arrived(remote, pushed)
    a.kill()
    await a.wait()
    assert done < TAGS, "the queue had drained before the kill: nothing tested"
    await a.start()
    await all_arrived(b.url("proxy"), pushed)
    with trio.fail_after(60):
        while await pending(a.url("index")):
            await trio.sleep(0.2)
