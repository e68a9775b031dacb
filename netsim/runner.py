"""Run a scenario with real daemons and measure it.

Every node is a ``swarmreg daemon`` child process. In ``netns`` mode each runs in its own
network namespace at its own address, its links shaped by tc (netsim.network). In ``loopback``
mode (no root, no namespaces, or asked for) every node binds 127.0.0.1 and its caps are
libtorrent's rate limits, which the session's peer-class filter applies to loopback peers too.
Agents pull one blob through their blob API, or an image through their registry API.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio

from netsim import pulls
from netsim.cluster import HERD, QUIET, Cluster, joins
from netsim.cpu import machine_busy, own_seconds, process_seconds
from netsim.images import Image, make_blob, size_label
from netsim.network import Network, NetworkError, sweep, unavailable
from netsim.registry_client import push_new_image
from netsim.scenario import Fault, Scenario
from netsim.stats import percentile
from swarmreg.config import Address
from swarmreg.devcluster import DaemonProcess
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginClient

NS = "netsim/blobs"
GiB = 1 << 30
# Counters are sampled this often: every /stats request is work for the daemon it asks (a profile
# of swarm30's agents found it among the larger items of their Python work at 0.5 s).
SAMPLE_INTERVAL = 2.0
REPOSITORY, TAG = "netsim/image", "v1"  # an image scenario's image
MODES = ("auto", "netns", "loopback")
# Milestones of each agent's torrent (seconds; "metainfo" is the tracker round trip before it).
MILESTONES = ("metainfo", "announced", "first_piece", "finished", "verified")
NO_DELAY = "none (no netem in this kernel, and netsim has no delay relay)"


@attrs.define
class Pull:
    """One agent's pull: when it started and ended (seconds from the run's start), and how."""

    agent: int
    started: float
    finished: float | None = None
    error: str | None = None
    retries: int = 0
    layers: dict[str, float] = attrs.Factory(dict)  # an image's: each layer size's GET seconds

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class Run:
    """The nodes of one scenario run, each a child process with its own data directory and log."""

    def __init__(self, scenario: Scenario, work: Path, network: Network | None = None) -> None:
        self.scenario = scenario
        self.work = work
        self.network = network
        # The nodes listen on their namespaces' addresses: the internal writes need the cluster secret.
        self.secret = secrets.token_hex(16)
        self.cluster = Cluster(work, (*QUIET, f'cluster.secret="{self.secret}"'))
        self.herd: DaemonProcess | None = None
        self.agents: list[DaemonProcess] = []
        self.samples: list[dict[str, Any]] = []  # bytes served by the origin and by agents over time

    async def _process(self, name: str, roles: list[str], up: int, down: int, *overrides: str) -> DaemonProcess:
        """A node's process: in its own shaped namespace, or on loopback with libtorrent's caps."""
        if self.network is None:
            return self.cluster.add(name, roles, f"swarm.upload_rate_limit={up}",
                                    f"swarm.download_rate_limit={down}", *overrides)
        host = await self.network.add(name, self.scenario.links.mtu)
        await self.network.shape(host, up=up, down=down)
        return self.cluster.add(name, roles, *overrides, host=host.address, wrapper=host.wrapper)

    async def start(self) -> None:
        links = self.scenario.links
        if self.network is not None:
            await self.network.create()
        # An image's tag is resolved by the index, and the image pushed to the proxy, as docker's are.
        roles = list(HERD) if self.scenario.image else ["origin", "tracker"]
        self.herd = await self._process("herd", roles, links.origin_up, 0, *self.scenario.herd_settings)
        await self.herd.start()
        for i in range(self.scenario.agents):
            agent = await self._process(f"agent-{i}", ["agent"], links.agent_up, links.agent_down,
                                        *joins(self.herd), *self.scenario.agent_settings)
            self.agents.append(agent)
        async with trio.open_nursery() as nursery:
            for agent in self.agents:
                nursery.start_soon(agent.start)

    def cpu_seconds(self) -> float:
        """CPU seconds the live daemons have used so far."""
        return sum(process_seconds(p.process.pid) for p in self.cluster.processes if p.process is not None)

    async def idle_cores(self, seconds: float = 2.0) -> float:
        """Cores the daemons use with nothing to do (a baseline that grows with the node count)."""
        before = self.cpu_seconds()
        await trio.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds

    async def stop(self) -> None:
        """Stop every process, then take the network down (whatever still runs in it is killed)."""
        await self.cluster.stop(10, at_once=True)
        if self.network is not None:
            await self.network.destroy()

    async def publish(self) -> str | Image:
        """What the agents pull: a random blob uploaded to the origin with Kraken's chunked upload
        (its digest), or an image of random layers pushed to the proxy as docker pushes."""
        assert self.herd is not None
        if self.scenario.image is not None:
            image = await push_new_image(self.herd.url("proxy"), self.work, list(self.scenario.image.layers),
                                         REPOSITORY, TAG, timeout=600)
            for layer in image.layers:
                assert layer.path is not None
                layer.path.unlink()
            return image
        path = self.work / "blob"
        digest = make_blob(path, self.scenario.blob_size)
        async with OriginClient(Address.parse(self.herd.address("origin")), timeout=600,
                                secret=self.secret) as origin:
            await origin.upload_file(NS, Digest.parse(digest), path, through=False)
        path.unlink()
        return digest

    async def pull(self, index: int, target: str | Image, record: Pull, t0: float) -> None:
        """Agent ``index``'s pull of ``target``: the blob of that digest from its blob API, or the
        image from its registry API (netsim.pulls). A pull cut by a fault is tried again (as a
        client would) until the scenario's timeout."""
        agent = self.agents[index]
        timeout = self.scenario.timeout
        with trio.move_on_after(timeout):
            while True:
                try:
                    if isinstance(target, Image):
                        record.layers = await pulls.image(agent.url("agent", "registry"), target, timeout)
                    else:
                        await pulls.blob(f"{agent.url('agent')}/namespace/{quote(NS, safe='')}/blobs/{target}",
                                         target, timeout)
                except pulls.Cut as cut:
                    record.error = str(cut)
                    record.retries += 1
                    await trio.sleep(0.5)
                    continue
                except pulls.WrongContent as wrong:
                    record.error = str(wrong)
                else:
                    record.finished, record.error = time.monotonic() - t0, None
                return
        record.error = f"not done after {timeout:g} s ({record.error})"

    async def stats(self, client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The /stats of the origin and of every running agent."""
        assert self.herd is not None
        origin = (await client.get(f"{self.herd.url('origin')}/stats")).json()
        agents = [(await client.get(f"{agent.url('agent')}/stats")).json() for agent in self.agents
                  if agent.process is not None and agent.process.poll() is None]
        return origin, agents

    async def sample(self, t0: float, done: trio.Event) -> None:
        """Every SAMPLE_INTERVAL: bytes the origin has sent, bytes the agents got from each other."""
        async with httpx.AsyncClient(timeout=5) as client:
            while not done.is_set():
                point: dict[str, Any] = {"t": time.monotonic() - t0, "origin_up": 0, "from_agents": 0}
                try:
                    origin, agents = await self.stats(client)
                    point.update(traffic(origin, agents))
                except (httpx.HTTPError, OSError, KeyError):
                    pass
                self.samples.append(point)
                with trio.move_on_after(SAMPLE_INTERVAL):
                    await done.wait()

    async def fault(self, fault: Fault, t0: float, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Break a node at the fault's time; started once a refusal from the start is in place
        (so that the pulls begin behind it), at once otherwise."""
        from_start = fault.action == "refuse" and fault.at == 0
        if not from_start:
            task_status.started()
        await trio.sleep_until(trio.current_time() + max(0.0, fault.at - (time.monotonic() - t0)))
        node, action = fault.node, fault.action
        process = self.herd if node in ("origin", "tracker", "herd") else self.agents[int(node.split("-")[1])]
        assert process is not None
        if action == "refuse":
            await self.refuse(process, fault.duration, task_status if from_start else trio.TASK_STATUS_IGNORED)
            return
        process.kill()
        await process.wait()
        if action == "restart":  # on the same ports, so that its peers and clients find it again
            process.overrides = (*process.overrides, *pinned(process.ready))
            await process.start()

    async def refuse(self, process: DaemonProcess, seconds: float,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For ``seconds``, the node's peer wire refuses every connection and its dials fail."""
        if self.network is None:
            raise NetworkError("a refuse fault needs netns mode")
        host = self.network.hosts[process.name]
        me = Address.parse(process.ready["peer"])
        others = [Address.parse(p.ready["peer"]) for p in self.cluster.processes
                  if p is not process and "peer" in p.ready]
        await self.network.refuse(host, me.port, [(a.host, a.port) for a in others])
        task_status.started()
        try:
            await trio.sleep(seconds)
        finally:
            with trio.CancelScope(shield=True):
                await self.network.accept(host)


def pinned(ready: dict[str, Any]) -> tuple[str, ...]:
    """``--set`` overrides that bind a restarted daemon where it was (from its ready document)."""
    roles = ready.get("roles", {})
    pins = [f"origin.listen={roles['origin']['http']}"] if "origin" in roles else []
    pins += [f"tracker.listen={roles['tracker']['ws']}"] if "tracker" in roles else []
    pins += [f"{role}.listen={roles[role]['http']}" for role in ("index", "proxy") if role in roles]
    if "agent" in roles:
        pins += [f"agent.listen={roles['agent']['http']}", f"agent.registry_listen={roles['agent']['registry']}"]
    if "peer" in ready:
        pins.append(f"swarm.listen={ready['peer']}")
    return tuple(pins)


async def choose_network(mode: str) -> tuple[Network | None, str]:
    """The run's network for ``mode`` (auto, netns, loopback) and the mode the report names.
    ``auto`` falls back to loopback, saying why; ``netns`` fails instead."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if mode == "loopback":
        return None, "loopback"
    reason = unavailable()
    if reason is None:
        await sweep()  # what runs that died left behind
        return Network(), "netns"
    if mode == "netns":
        raise NetworkError(f"network namespaces are unavailable: {reason}")
    return None, f"loopback (namespaces unavailable: {reason})"


async def run_scenario(scenario: Scenario, work: Path, mode: str = "auto") -> dict[str, Any]:
    """Run ``scenario`` in ``work``; every process, namespace and link is removed however the
    run ends (an error, a cancellation, Ctrl-C)."""
    work.mkdir(parents=True, exist_ok=True)
    network, mode_name = await choose_network(mode)
    run = Run(scenario, work, network)
    try:
        await run.start()
        target = await run.publish()
        records = [Pull(i, start) for i, start in enumerate(scenario.arrivals.start_times(scenario.agents))]
        done = trio.Event()
        idle = await run.idle_cores()
        cpu_before, own_before, busy_before = run.cpu_seconds(), own_seconds(), machine_busy()
        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.sample, t0, done)
            for fault in scenario.faults:
                await nursery.start(run.fault, fault, t0)
            async with trio.open_nursery() as pulling:
                for record in records:
                    pulling.start_soon(_pull_at, run, record, target, t0)
            done.set()
            nursery.cancel_scope.cancel()
        wall = time.monotonic() - t0
        busy = [after - before for after, before in zip(machine_busy(), busy_before, strict=True)]
        cpu = {"wall_s": wall, "daemons_s": run.cpu_seconds() - cpu_before, "netsim_s": own_seconds() - own_before,
               "machine_busy": busy[0] / busy[1] if busy[1] else 0.0, "cores": os.cpu_count() or 1,
               "idle_daemons_cores": idle}
        image = target if isinstance(target, Image) else None
        digests = [layer.digest for layer in image.layers] if image else [str(target)]
        counters = await _final_counters(run, digests)
        nodes = len(run.cluster.processes)
        cpu.update(idle_cores_per_daemon=idle / nodes,
                   daemons_s_per_gib=cpu["daemons_s"] / max(counters["received"] / GiB, 1e-9))
        figures = summarize(scenario, records, run.samples, **counters, image=image)
        figures.update(mode=mode_name, cpu=cpu)
        return figures
    finally:
        with trio.CancelScope(shield=True):
            await run.stop()


def traffic(origin: dict[str, Any], agents: list[dict[str, Any]]) -> dict[str, int]:
    """Bytes the origin sent, the agents received, and the agents got from each other: all they
    received but what the origin sent (the sessions' exact totals, not per-peer samples)."""
    origin_up = origin["totals"]["uploaded"]
    received = sum(stats["totals"]["downloaded"] for stats in agents)
    return {"origin_up": origin_up, "received": received, "from_agents": max(0, received - origin_up)}


async def _final_counters(run: Run, digests: Sequence[str]) -> dict[str, Any]:
    """The origin's egress, the agents' byte counts and each agent's torrent milestones, for each
    of ``digests`` (the blob, or the image's layers)."""
    async with httpx.AsyncClient(timeout=10) as client:
        origin, agents = await run.stats(client)
    timelines = {digest: [t.get("timeline", {}) for stats in agents for t in stats["torrents"]
                          if t["digest"] == digest] for digest in digests}
    return {**traffic(origin, agents), "timelines": timelines}


async def _pull_at(run: Run, record: Pull, target: str | Image, t0: float) -> None:
    await trio.sleep(max(0.0, record.started - (time.monotonic() - t0)))
    await run.pull(record.agent, target, record, t0)


def _milestones(timelines: list[dict[str, float]]) -> dict[str, float]:
    """The median of each torrent milestone across agents."""
    return {name: statistics.median(values) for name in MILESTONES
            if (values := [t[name] for t in timelines if name in t])}


def _image_figures(image: Image, pulls: list[Pull], timelines: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """An image's layers: each one's size, digest, the p50 and max of its GET's seconds across the
    agents that completed (layers of one size count as the slowest of them), and its torrent
    milestones (none for a layer the tracker serves inline)."""
    layers = []
    for layer in image.layers:
        seconds = sorted(p.layers[label] for p in pulls if p.seconds is not None
                         and (label := size_label(layer.size)) in p.layers)
        layers.append({"size": layer.size, "digest": layer.digest,
                       "p50_s": percentile(seconds, 0.5) if seconds else None, "max_s": max(seconds, default=None),
                       "milestones_p50_s": _milestones(timelines[layer.digest])})
    return {"repository": image.repository, "tag": image.tag, "manifest_digest": image.manifest_digest,
            "size": sum(layer.size for layer in image.layers), "layers": layers}


def summarize(scenario: Scenario, pulls: list[Pull], samples: list[dict[str, Any]], *, origin_up: int,
              from_agents: int, received: int, timelines: dict[str, list[dict[str, float]]],
              image: Image | None = None) -> dict[str, Any]:
    """The report's figures: completion percentiles against T*, origin egress (in multiples of
    the blob, or of the image's layers), peer share, and the median of each torrent milestone
    across agents (the blob's, or the largest layer's; an image's layers each have theirs)."""
    times = [p.seconds for p in pulls if p.seconds is not None]
    bound = scenario.lower_bound()
    main = max(image.layers, key=lambda layer: layer.size).digest if image else next(iter(timelines))
    figures: dict[str, Any] = {
        # blob_size is F, the bytes each agent pulls (an image's layers: its "image" has them one by one).
        "scenario": scenario.name, "agents": scenario.agents, "blob_size": scenario.size,
        "links": attrs.asdict(scenario.links), "lower_bound_s": bound,
        "completed": len(times), "failed": [attrs.asdict(p) for p in pulls if p.seconds is None],
        "retries": sum(p.retries for p in pulls),
        "completion_s": sorted(times), "completion_by_agent": [p.seconds for p in pulls],
        "origin_egress_x": origin_up / scenario.size,
        "share_from_agents": from_agents / max(received, 1), "received_bytes": received, "samples": samples,
        "delay": NO_DELAY, "milestones_p50_s": _milestones(timelines[main]),
    }
    if image is not None:
        figures["image"] = _image_figures(image, pulls, timelines)
    if times:
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            figures[f"{name}_s"] = percentile(figures["completion_s"], q)
            figures[f"{name}_vs_bound"] = figures[f"{name}_s"] / bound if bound else None
        figures["mean_s"] = statistics.fmean(times)
    return figures
