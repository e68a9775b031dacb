"""Registries for the differential conformance test: the reference and the targets.

``conformance_target`` is parametrized over ``TARGETS``: name -> a factory that takes the test's
``tmp_path`` and returns an async context manager yielding the target's base URL (and stopping
it on exit). To compare another registry with docker-registry, add an entry; each entry becomes
one test case (``test_differential.py::...[<name>]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from tests.clients.registry import reference_registry_at
from tests.conftest import make_config, start_daemon


@asynccontextmanager
async def docker_registry(tmp_path: Path) -> AsyncIterator[str]:
    """A second, independent docker-registry: comparing it proves the harness deterministic."""
    with reference_registry_at(tmp_path, name="target-docker-registry") as url:
        yield url


@asynccontextmanager
async def swarmreg_proxy(tmp_path: Path) -> AsyncIterator[str]:
    """Our proxy: a herd daemon (origin, index, proxy) in this process, data under tmp_path/herd.

    The fixture runs in its own task (pytest-trio), so the daemon's nursery may stay open
    across the ``yield``; the daemon is stopped gracefully on exit.
    """
    async with trio.open_nursery() as nursery:
        herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "index", "proxy"])
        try:
            yield herd.url("proxy")
        finally:
            await herd.stop()


TARGETS: dict[str, Callable[[Path], AbstractAsyncContextManager[str]]] = {
    "docker-registry": docker_registry,
    "swarmreg-proxy": swarmreg_proxy,
}


@attrs.frozen
class Target:
    name: str
    url: str


@pytest.fixture
def conformance_reference(tmp_path: Path) -> Iterator[str]:
    """Base URL of a fresh docker-registry (CNCF distribution 2.8): the reference behaviour."""
    with reference_registry_at(tmp_path, name="reference-docker-registry") as url:
        yield url


@pytest.fixture(params=list(TARGETS))
async def conformance_target(request: pytest.FixtureRequest,
                             tmp_path: Path) -> AsyncIterator[Target]:
    """A fresh registry to compare with the reference, one per entry of ``TARGETS``."""
    async with TARGETS[request.param](tmp_path) as url:
        yield Target(request.param, url)
