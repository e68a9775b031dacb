"""Shared fixtures: real daemons on 127.0.0.1 port 0, in this process or as child processes."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from netsim.cluster import Cluster
from swarmreg.config import Config, load_config
from swarmreg.daemon import Daemon
from swarmreg.devcluster import DaemonProcess, port_zero
from tests.servers.redis import redis_server  # noqa: F401  (fixtures of real servers, for every test)
from tests.servers.s3 import moto_server, s3_bucket  # noqa: F401
from tests.watchdog import add_watchdogs, close_abandoned_trio_run

# Every role listens on a free port in tests.
PORT_ZERO = port_zero()


@pytest.hookimpl(trylast=True)  # after pytest-trio's trio_mode has marked the Trio tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    add_watchdogs(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    try:
        return (yield)
    except BaseException as error:  # pytest-timeout's failure may stop a trio.run mid-loop
        close_abandoned_trio_run(error)
        raise


def make_config(data_dir: Path, *overrides: str) -> Config:
    """A test configuration: port 0 everywhere, short shutdown, data in ``data_dir``."""
    return load_config(None, [*PORT_ZERO, "shutdown_timeout=5", *overrides], data_dir=str(data_dir))


@attrs.define
class RunningDaemon:
    """A daemon running inside the test's Trio run."""

    daemon: Daemon
    ready: dict[str, Any]

    @property
    def config(self) -> Config:
        return self.daemon.config

    def url(self, role: str, port: str = "http") -> str:
        return f"http://{self.ready['roles'][role][port]}"

    async def stop(self) -> None:
        """Stop the daemon gracefully and wait until it has."""
        self.daemon.stop.set()
        await self.daemon.stopped.wait()


async def start_daemon(nursery: trio.Nursery, config: Config, roles: Sequence[str]) -> RunningDaemon:
    """Start a daemon in ``nursery`` and wait until every role listens."""
    daemon = Daemon(config, roles)
    ready = await nursery.start(partial(daemon.run, handle_signals=False))
    return RunningDaemon(daemon, ready)


@pytest.fixture
async def origin(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """An origin daemon in this process, with its data under tmp_path/origin."""
    running = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    yield running
    await running.stop()


@pytest.fixture
async def origin_client(origin: RunningDaemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        yield client


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Any]:
    """Start ``swarmreg daemon`` child processes; every one still running is killed at teardown.

    ``await spawn(name, roles, *overrides)`` returns a ready DaemonProcess whose
    log is ``tmp_path/<name>.log``.
    """
    cluster = Cluster(tmp_path, ["shutdown_timeout=5"], env={"PYTHONUNBUFFERED": "1"})

    async def start(name: str, roles: Sequence[str], *overrides: str, data_dir: Path | None = None,
                    wait: bool = True) -> DaemonProcess:
        process = cluster.add(name, roles, *overrides, data_dir=data_dir)
        if wait:
            await process.start()
        else:
            await process.spawn()
        return process

    try:
        yield start
    finally:  # even when a hung test is cancelled: no daemon outlives it
        await cluster.kill()


def files_under(root: Path) -> set[str]:
    """Every file below ``root``, as paths relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def blob_files(data_dir: Path) -> dict[str, int]:
    """Committed blobs of a data directory, of every algorithm (blobs/<alg>/<xx>/<hex>): hex -> size."""
    blobs = data_dir / "blobs"
    return {p.name: p.stat().st_size for p in blobs.glob("*/*/*")} if blobs.exists() else {}


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible test content."""
    return random.Random(seed).randbytes(size)


def free_port() -> int:
    """A port nothing listens on now (for a daemon that must come back on the same port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
