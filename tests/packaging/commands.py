"""A daemon command line taken from a deployment file (a unit's ExecStart, a container's args),
run as its supervisor would: in its working directory, stopped with its stop signal and killed
if it outlives the supervisor's stop timeout."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import random_bytes
from tests.proxy.helpers import DOCKER_MANIFEST, digest_of, push_image

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT = 60


class DaemonCommand:
    """``swarmreg ARGS`` (``python -m swarmreg`` of this checkout) with its data and ready file in
    ``state`` (what the supervisor's volume or StateDirectory would be) and ``--set`` overrides
    (free ports, a secret file where the supervisor would mount one)."""

    def __init__(self, name: str, args: Sequence[str], state: Path, overrides: Sequence[str], *,
                 stop_signal: signal.Signals, stop_timeout: float, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.state = state
        self.ready_file = state / "ready.json"
        self.log = state.parent / f"{name}.log"
        self.argv = [sys.executable, "-m", "swarmreg", *args, "--data-dir", str(state),
                     "--ready-file", str(self.ready_file), *(f"--set={item}" for item in overrides)]
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: trio.Process | None = None
        self.ready: dict[str, Any] = {}

    async def start(self) -> dict[str, Any]:
        """Start it and wait for its ready document (every bound address)."""
        self.state.mkdir(parents=True)
        with open(self.log, "wb") as log:
            self.process = await trio.lowlevel.open_process(self.argv, cwd=self.state, env=self.env,
                                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        with trio.fail_after(START_TIMEOUT):
            while not self.ready_file.exists():
                assert self.process.poll() is None, self.log.read_text()
                await trio.sleep(0.1)
        self.ready = json.loads(self.ready_file.read_text())
        return self.ready

    async def stop(self) -> tuple[float, int]:
        """Send the stop signal; (seconds until it exited, its status). Fails, after a SIGKILL as
        the supervisor would send, if it is still running after the stop timeout."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(self.stop_signal)
        with trio.move_on_after(self.stop_timeout):
            status = await self.process.wait()
            return time.monotonic() - started, status
        self.process.kill()
        await self.process.wait()
        raise AssertionError(f"{self.name}: still running {self.stop_timeout} s after {self.stop_signal.name}\n"
                             f"{self.log.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


@pytest.fixture
async def commands() -> AsyncIterator[list[DaemonCommand]]:
    """The DaemonCommands a test starts (it appends them); any still running at teardown is killed."""
    started: list[DaemonCommand] = []
    try:
        yield started
    finally:
        for command in started:
            command.kill()
            if command.process is not None:
                with trio.move_on_after(10):
                    await command.process.wait()


async def pull_through(proxy_url: str, registry_url: str, repository: str) -> None:
    """Push an image (a layer big enough for a torrent, one small enough to travel inline)
    through the herd's proxy and pull it, byte for byte, from an agent's registry port."""
    layers = [random_bytes(3 << 20, seed=11), random_bytes(200_000, seed=12)]
    async with httpx.AsyncClient(base_url=proxy_url, timeout=60) as proxy:
        _, manifest = await push_image(proxy, repository, "v1", layers)
    async with httpx.AsyncClient(base_url=registry_url, timeout=60) as client:
        response = await client.get(f"/v2/{repository}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
        assert response.status_code == 200 and response.content == manifest, response.text
        for layer in layers:
            pulled = await client.get(f"/v2/{repository}/blobs/{digest_of(layer)}")
            assert pulled.status_code == 200, pulled.text
            assert hashlib.sha256(pulled.content).digest() == hashlib.sha256(layer).digest()
