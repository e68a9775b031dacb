"""Two clusters for the replication tests: a sending cluster A whose [[index.replicate]] rule names
cluster B's proxy, and what the tests look at (B's answers, A's queue)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from swarmreg.devcluster import LISTEN_SETTINGS
from swarmreg.index.client import IndexClient
from tests.conftest import free_port
from tests.proxy.helpers import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

# What a cluster runs (no tracker: B is read through its proxy, which streams from its origin).
HERD = ["origin", "index", "proxy"]
ACCEPT = ", ".join([DOCKER_MANIFEST, OCI_MANIFEST, OCI_INDEX])


def rule(remote: str, repository: str = "team/.*", **fields: Any) -> str:
    """The ``--set`` of one [[index.replicate]] rule; tests retry fast (max_backoff 1 s)."""
    table = {"repository": repository, "remote": remote, "max_backoff": 1, "timeout": 10, **fields}
    return "index.replicate=[{" + ", ".join(f"{key} = {json.dumps(value)}" for key, value in table.items()) + "}]"


def fixed_ports(roles: list[str]) -> tuple[str, ...]:
    """Listeners on ports chosen now, so that a daemon restarted with them comes back where it was."""
    keys = dict.fromkeys(key for role in roles for key in LISTEN_SETTINGS[role])
    return tuple(f"{key}=127.0.0.1:{free_port()}" for key in keys)


def listen_url(overrides: tuple[str, ...], key: str = "proxy.listen") -> str:
    """The URL of the listener ``key`` that ``overrides`` (fixed_ports) set."""
    return "http://" + next(item.partition("=")[2] for item in overrides if item.startswith(key + "="))


async def manifest_at(proxy: str, repository: str, reference: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
        return await client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})


async def wait_for_tag(proxy: str, repository: str, tag: str, digest: str, timeout: float = 60) -> bytes:
    """The manifest bytes of ``repository:tag`` at the proxy once the tag points at ``digest``."""
    with trio.fail_after(timeout):
        while True:
            try:
                answer = await manifest_at(proxy, repository, tag)
                if answer.status_code == 200 and answer.headers["docker-content-digest"] == digest:
                    return answer.content
            except httpx.TransportError:
                pass  # the remote is not up (yet)
            await trio.sleep(0.2)


async def blob_at(proxy: str, repository: str, digest: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
        return await client.get(f"/v2/{repository}/blobs/{digest}")


async def queue(index: str) -> dict[str, Any]:
    """The index's replication status (its admin route)."""
    async with IndexClient(index) as client:
        return await client.replication_status(count=-1)


async def pending(index: str) -> int:
    return sum(remote["pending"] for remote in (await queue(index))["remotes"])


async def wait_until_drained(index: str, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while await pending(index):
            await trio.sleep(0.2)
