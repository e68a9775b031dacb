"""A cluster of ``swarmreg daemon`` child processes: the one wrapper netsim, the benchmark
scripts and the tests start their herds and agents with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import trio

from swarmreg.devcluster import DaemonProcess, port_zero

# Settings for runs that measure the swarm, not the disk or the log.
QUIET = ("store.fsync=false", 'log.level="warning"')
HERD = ("origin", "tracker", "index", "proxy")


def joins(herd: DaemonProcess) -> tuple[str, ...]:
    """Settings that point an agent at ``herd``: its tracker, and its index if it runs one."""
    settings = [f"agent.tracker={herd.address('tracker', 'ws')}"]
    if "index" in herd.roles:
        settings.append(f"agent.index={herd.address('index', 'http')}")
    return tuple(settings)


def pid_of(process: DaemonProcess) -> int:
    """The pid of a process that has been started."""
    assert process.process is not None, f"{process.name} was never started"
    return process.process.pid


def alive(process: DaemonProcess) -> bool:
    return process.process is not None and process.process.poll() is None


class Cluster:
    """Daemons under one work directory, each with its data in ``work/<name>`` and its log in
    ``work/<name>.log``; every listener is on port 0, then come the cluster's ``settings`` and
    each daemon's own overrides (later ones win)."""

    def __init__(self, work: Path, settings: Sequence[str] = (), *, env: Mapping[str, str] | None = None) -> None:
        self.work = work
        self.settings = tuple(settings)
        self.env = env
        self.processes: list[DaemonProcess] = []
        self._logs: list[BinaryIO] = []

    def log_path(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def add(self, name: str, roles: Sequence[str], *overrides: str, host: str = "127.0.0.1",
            wrapper: Sequence[str] = (), data_dir: Path | None = None) -> DaemonProcess:
        """A daemon listening on ``host`` (run under ``wrapper``, such as ``ip netns exec``), not
        started yet."""
        self.work.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path(name), "ab")
        self._logs.append(log)
        process = DaemonProcess(name, roles, data_dir or self.work / name,
                                overrides=[*port_zero(roles, host), *self.settings, *overrides],
                                stderr=log, env=self.env, wrapper=wrapper)
        self.processes.append(process)
        return process

    async def start(self, name: str, roles: Sequence[str], *overrides: str, host: str = "127.0.0.1",
                    wrapper: Sequence[str] = (), data_dir: Path | None = None) -> DaemonProcess:
        """A daemon, started and ready (its ready document read)."""
        process = self.add(name, roles, *overrides, host=host, wrapper=wrapper, data_dir=data_dir)
        await process.start()
        return process

    async def herd(self, *overrides: str, roles: Sequence[str] = HERD, name: str = "herd",
                   wrapper: Sequence[str] = ()) -> DaemonProcess:
        return await self.start(name, roles, *overrides, wrapper=wrapper)

    async def agent(self, herd: DaemonProcess, name: str, *overrides: str,
                    wrapper: Sequence[str] = ()) -> DaemonProcess:
        """An agent of ``herd``, started."""
        return await self.start(name, ["agent"], *joins(herd), *overrides, wrapper=wrapper)

    async def stop(self, timeout: float = 30.0, *, at_once: bool = False) -> dict[str, int]:
        """Stop every daemon, the last started first (agents before their herd) or all ``at_once``,
        each killed if it has not exited ``timeout`` seconds after SIGTERM; returns their exit
        statuses, and closes the logs."""
        statuses: dict[str, int] = {}

        async def stop(process: DaemonProcess) -> None:
            statuses[process.name] = await process.stop(timeout)

        if at_once:
            async with trio.open_nursery() as nursery:
                for process in self.processes:
                    nursery.start_soon(stop, process)
        else:
            for process in reversed(self.processes):
                await stop(process)
        self.close()
        return statuses

    async def kill(self) -> None:
        """Kill every daemon still running (no graceful stop: a test's teardown), and close the logs."""
        for process in self.processes:
            process.kill()
            if process.process is not None:
                await process.wait()
        self.close()

    def close(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()
