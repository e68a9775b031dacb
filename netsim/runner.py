"""Run a scenario with real daemons and measure it.

Loopback mode (the one built so far): every node is a `swarmreg daemon` child process on
127.0.0.1, its link caps enforced by libtorrent's rate limits (the session's peer-class filter
applies them to loopback peers too). Network namespaces with tc shaping are the next step.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio

from netsim.scenario import Scenario
from swarmreg.config import Address
from swarmreg.devcluster import DaemonProcess
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginClient

NS = "netsim/blobs"
QUIET = ("store.fsync=false", 'log.level="warning"')
PORTS = ("origin.listen=127.0.0.1:0", "swarm.listen=127.0.0.1:0", "tracker.listen=127.0.0.1:0",
         "agent.listen=127.0.0.1:0", "agent.registry_listen=127.0.0.1:0")
CHUNK = 4 << 20


@attrs.define
class Pull:
    """One agent's pull: when it started and ended (seconds from the run's start), and how."""

    agent: int
    started: float
    finished: float | None = None
    error: str | None = None
    retries: int = 0

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class Run:
    """The nodes of one scenario run, each a child process with its own data directory and log."""

    def __init__(self, scenario: Scenario, work: Path) -> None:
        self.scenario = scenario
        self.work = work
        self.herd: DaemonProcess | None = None
        self.agents: list[DaemonProcess] = []
        self.samples: list[dict[str, Any]] = []  # bytes served by the origin and by agents over time

    def _process(self, name: str, roles: list[str], *overrides: str) -> DaemonProcess:
        return DaemonProcess(name, roles, self.work / name, overrides=[*PORTS, *QUIET, *overrides],
                             stderr=open(self.work / f"{name}.log", "ab"))

    async def start(self) -> None:
        links = self.scenario.links
        self.herd = self._process("herd", ["origin", "tracker"], f"swarm.upload_rate_limit={links.origin_up}")
        await self.herd.start()
        tracker = self.herd.address("tracker", "ws")
        for i in range(self.scenario.agents):
            agent = self._process(f"agent-{i}", ["agent"], f"agent.tracker={tracker}",
                                  f"swarm.upload_rate_limit={links.agent_up}",
                                  f"swarm.download_rate_limit={links.agent_down}", *self.scenario.agent_settings)
            self.agents.append(agent)
        async with trio.open_nursery() as nursery:
            for agent in self.agents:
                nursery.start_soon(agent.start)

    async def stop(self) -> None:
        for process in [*self.agents, *([self.herd] if self.herd else [])]:
            await process.stop(timeout=10)

    async def upload(self, path: Path, digest: str) -> None:
        """The blob to the origin, with Kraken's chunked upload."""
        assert self.herd is not None
        async with OriginClient(Address.parse(self.herd.address("origin")), timeout=600) as origin:
            await origin.upload_file(NS, Digest.parse(digest), path, through=False)

    async def pull(self, index: int, digest: str, record: Pull, t0: float) -> None:
        """GET the blob from agent ``index``, hashing every byte; the digest must match. A pull cut
        by a fault is tried again (as a client would) until the scenario's timeout."""
        agent = self.agents[index]
        url = f"{agent.url('agent')}/namespace/{quote(NS, safe='')}/blobs/{digest}"
        with trio.move_on_after(self.scenario.timeout):
            while True:
                hasher = hashlib.sha256()
                try:
                    async with httpx.AsyncClient(timeout=self.scenario.timeout) as client:
                        async with client.stream("GET", url) as response:
                            response.raise_for_status()
                            async for chunk in response.aiter_raw(CHUNK):
                                hasher.update(chunk)
                except (httpx.HTTPError, OSError) as error:
                    record.error = f"{type(error).__name__}: {error}"
                    record.retries += 1
                    await trio.sleep(0.5)
                    continue
                if "sha256:" + hasher.hexdigest() != digest:
                    record.error = "content does not match the digest"
                else:
                    record.finished, record.error = time.monotonic() - t0, None
                return
        record.error = f"not done after {self.scenario.timeout:g} s ({record.error})"

    async def sample(self, t0: float, done: trio.Event) -> None:
        """Every half second: bytes the origin has sent, bytes the agents got from each other."""
        async with httpx.AsyncClient(timeout=5) as client:
            while not done.is_set():
                point: dict[str, Any] = {"t": time.monotonic() - t0, "origin_up": 0, "from_agents": 0}
                try:
                    assert self.herd is not None
                    point["origin_up"] = (await client.get(f"{self.herd.url('origin')}/stats")).json()["totals"]["uploaded"]
                    for agent in self.agents:
                        if agent.process is not None and agent.process.poll() is None:
                            totals = (await client.get(f"{agent.url('agent')}/stats")).json()["totals"]
                            point["from_agents"] += totals["downloaded_from"]["agent"]
                except (httpx.HTTPError, OSError, KeyError):
                    pass
                self.samples.append(point)
                with trio.move_on_after(0.5):
                    await done.wait()

    async def fault(self, at: float, node: str, action: str, t0: float) -> None:
        await trio.sleep_until(trio.current_time() + max(0.0, at - (time.monotonic() - t0)))
        process = self.herd if node in ("origin", "tracker", "herd") else self.agents[int(node.split("-")[1])]
        assert process is not None
        process.kill()
        await process.wait()
        if action == "restart":  # on the same ports, so that its peers and clients find it again
            process.overrides = (*process.overrides, *pinned(process.ready))
            await process.start()


def pinned(ready: dict[str, Any]) -> tuple[str, ...]:
    """``--set`` overrides that bind a restarted daemon where it was (from its ready document)."""
    roles = ready.get("roles", {})
    pins = [f"origin.listen={roles['origin']['http']}"] if "origin" in roles else []
    pins += [f"tracker.listen={roles['tracker']['ws']}"] if "tracker" in roles else []
    if "agent" in roles:
        pins += [f"agent.listen={roles['agent']['http']}", f"agent.registry_listen={roles['agent']['registry']}"]
    if "peer" in ready:
        pins.append(f"swarm.listen={ready['peer']}")
    return tuple(pins)


def make_blob(path: Path, size: int) -> str:
    """A random file of ``size`` bytes; returns its digest."""
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        left = size
        while left:
            piece = os.urandom(min(CHUNK, left))
            hasher.update(piece)
            file.write(piece)
            left -= len(piece)
    return "sha256:" + hasher.hexdigest()


async def run_scenario(scenario: Scenario, work: Path) -> dict[str, Any]:
    """Run ``scenario`` in ``work``; every process is stopped however the run ends."""
    work.mkdir(parents=True, exist_ok=True)
    run = Run(scenario, work)
    try:
        await run.start()
        blob = work / "blob"
        digest = make_blob(blob, scenario.blob_size)
        await run.upload(blob, digest)
        blob.unlink()
        pulls = [Pull(i, start) for i, start in enumerate(scenario.arrivals.start_times(scenario.agents))]
        done = trio.Event()
        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.sample, t0, done)
            for fault in scenario.faults:
                nursery.start_soon(run.fault, fault.at, fault.node, fault.action, t0)
            async with trio.open_nursery() as pulling:
                for record in pulls:
                    pulling.start_soon(_pull_at, run, record, digest, t0)
            done.set()
            nursery.cancel_scope.cancel()
        origin_up = run.samples[-1]["origin_up"] if run.samples else 0
        async with httpx.AsyncClient(timeout=10) as client:  # final counters
            assert run.herd is not None
            origin_up = (await client.get(f"{run.herd.url('origin')}/stats")).json()["totals"]["uploaded"]
            received = from_agents = 0
            for agent in run.agents:
                totals = (await client.get(f"{agent.url('agent')}/stats")).json()["totals"]
                received += totals["downloaded"]
                from_agents += totals["downloaded_from"]["agent"]
        return summarize(scenario, pulls, origin_up, from_agents, received, run.samples)
    finally:
        with trio.CancelScope(shield=True):
            await run.stop()


async def _pull_at(run: Run, record: Pull, digest: str, t0: float) -> None:
    await trio.sleep(max(0.0, record.started - (time.monotonic() - t0)))
    await run.pull(record.agent, digest, record, t0)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(scenario: Scenario, pulls: list[Pull], origin_up: int, from_agents: int, received: int,
              samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures: completion percentiles against T*, origin egress, peer share."""
    times = [p.seconds for p in pulls if p.seconds is not None]
    bound = scenario.lower_bound()
    figures: dict[str, Any] = {
        "scenario": scenario.name, "mode": "loopback", "agents": scenario.agents, "blob_size": scenario.blob_size,
        "links": attrs.asdict(scenario.links), "lower_bound_s": bound,
        "completed": len(times), "failed": [attrs.asdict(p) for p in pulls if p.seconds is None],
        "completion_s": sorted(times), "origin_egress_x": origin_up / scenario.blob_size,
        "share_from_agents": from_agents / max(received, 1), "samples": samples,
        "delay": "none (loopback mode has no delay relay)",
    }
    if times:
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            figures[f"{name}_s"] = _percentile(times, q)
            figures[f"{name}_vs_bound"] = figures[f"{name}_s"] / bound if bound else None
        figures["mean_s"] = statistics.fmean(times)
    return figures
