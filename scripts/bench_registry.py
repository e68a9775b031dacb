#!/usr/bin/env python3
"""Single-host speed: skopeo against swarmreg and against Debian's docker-registry, side by side.

The protocol of issue 17. Every repetition starts a fresh docker-registry and a fresh devcluster
(a herd: origin, tracker, index and proxy in one daemon; agent one; agent two), all on loopback
on ports the kernel picks, and builds a new image (a ``--size`` random gzip layer and a 64 KiB
one). skopeo's blob-info cache is removed before every copy. Phases:

1. push: skopeo to docker-registry, then to the proxy;
2. pull from docker-registry;
3. cold pull from agent one (every byte through the swarm from the origin);
4. warm pull from agent one (its own store);
5. pull from agent two, with agent one also seeding.

Each phase's wall time, and the CPU seconds (user + system, with reaped children, from
/proc/PID/stat; skopeo's from the rusage of this process's reaped children) of every process
involved: skopeo, the herd, agent one, agent two and docker-registry. Medians of ``--repeat``
(at least 5 by default), ratios against docker-registry measured in the same repetitions.

``--clients docker,podman,ctr`` adds pulls of the same image by those clients (each with its own
private daemon and store), from docker-registry, from agent one (warm) and from a fresh agent
(cold), the local image removed between pulls. ``--profile DIR`` runs py-spy on the herd during
the first push and on agent one during the first cold and warm pulls (raw collapsed stacks).

Run from the repository root as root (skopeo, docker-registry, docker.io, podman and containerd
come from Debian): ``.venv/bin/python scripts/bench_registry.py [--size 256MiB] [--repeat 5]
[--clients docker,podman,ctr] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import run_and_report
from netsim.cluster import QUIET, Cluster
from netsim.cpu import TICKS
from swarmreg.config import parse_size
from tests.clients.clients import Containerd, Docker, Podman, Skopeo, containers_env
from tests.clients.daemons import running_containerd, running_dockerd
from tests.clients.layout import build_oci_layout
from tests.clients.registry import reference_registry_at
from tests.clients.tools import hostport

# docker-registry answers 404 to a manifest request that does not accept the manifest's type.
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
PHASES = ("push_reference", "push_proxy", "pull_reference", "pull_agent_one_cold", "pull_agent_one_warm",
          "pull_agent_two")
# Each swarmreg phase and the docker-registry phase it is judged against.
RATIOS = {"push_proxy": "push_reference", "pull_agent_one_cold": "pull_reference",
          "pull_agent_one_warm": "pull_reference", "pull_agent_two": "pull_reference"}
SKOPEO = "skopeo"


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process and of its children it has reaped (0 if gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime


def reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall and CPU seconds of named phases, over the processes in ``pids``; the client that this
    script runs and waits for (skopeo, curl, a CLI) is counted from the reaped children's rusage."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, dict[str, list[float]]] = {}

    def snapshot(self) -> dict[str, float]:
        return {SKOPEO: reaped_children_cpu(), **{name: process_cpu(pid) for name, pid in self.pids.items()}}

    async def measure(self, phase: str, action: Callable[[], Awaitable[object]], client: str = SKOPEO) -> float:
        before, started = self.snapshot(), time.perf_counter()
        await action()
        elapsed, after = time.perf_counter() - started, self.snapshot()
        self.wall.setdefault(phase, []).append(elapsed)
        cpu = self.cpu.setdefault(phase, {})
        for name, seconds in after.items():
            cpu.setdefault(client if name == SKOPEO else name, []).append(round(seconds - before.get(name, 0.0), 3))
        return elapsed


@asynccontextmanager
async def profiled(directory: Path | None, name: str, pid: int) -> AsyncIterator[None]:
    """py-spy recording ``pid`` while the block runs (nothing without ``directory``); with
    BENCH_PYSPY_NATIVE=1 in the environment, native frames (libtorrent's, hashlib's) too."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    process = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                "--threads", *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else []),
                                "--output", str(directory / f"{name}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await trio.sleep(1.0)  # attached
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await trio.to_thread.run_sync(process.wait)


def fresh_skopeo(skopeo: Skopeo) -> Skopeo:
    """``skopeo`` with its blob-info cache removed: it would skip blobs it believes a registry has."""
    skopeo.cache_file.unlink(missing_ok=True)
    return skopeo


async def curl_get(url: str) -> None:
    await trio.run_process(["curl", "-sSf", "-o", "/dev/null", url])


async def repetition(work: Path, rep: int, size: int, meter: Meter, profile: Path | None,
                     clients: Mapping[str, Any]) -> None:
    """One repetition: a new docker-registry, devcluster and image; every phase measured."""
    skopeo = Skopeo(shutil.which("skopeo") or "skopeo", work / "skopeo", containers_env(work / f"home-{rep}"))
    layout = work / f"layout-{rep}"
    image = await trio.to_thread.run_sync(partial(build_oci_layout, layout, [size, 64 << 10], seed=rep))
    repo, tag = "bench/image", f"bench/image:r{rep}"
    blob = f"/v2/{repo}/blobs/{image.layers[0].digest}"
    cluster = Cluster(work / f"cluster-{rep}", QUIET)
    with reference_registry_at(work, f"docker-registry-{rep}") as reference:
        try:
            herd = await cluster.herd()
            one = await cluster.agent(herd, "agent-one")
            two = await cluster.agent(herd, "agent-two")
            meter.pids = {"herd": pid(herd), "agent_one": pid(one), "agent_two": pid(two),
                          "docker_registry": registry_pid(reference)}
            proxy = herd.url("proxy")
            one_url, two_url = one.url("agent", "registry"), two.url("agent", "registry")
            out = work / f"out-{rep}"
            out.mkdir()
            first = profile if rep == 0 else None
            await meter.measure("push_reference", partial(fresh_skopeo(skopeo).push, layout, reference, tag))
            async with profiled(first, "push-herd", pid(herd)):
                await meter.measure("push_proxy", partial(fresh_skopeo(skopeo).push, layout, proxy, tag))
            await meter.measure("pull_reference",
                                partial(fresh_skopeo(skopeo).pull, reference, tag, out / "ref", fmt="dir"))
            async with profiled(first, "cold-agent-one", pid(one)):
                await meter.measure("pull_agent_one_cold",
                                    partial(fresh_skopeo(skopeo).pull, one_url, tag, out / "cold", fmt="dir"))
            async with profiled(first, "warm-agent-one", pid(one)):
                await meter.measure("pull_agent_one_warm",
                                    partial(fresh_skopeo(skopeo).pull, one_url, tag, out / "warm", fmt="dir"))
            await meter.measure("pull_agent_two",
                                partial(fresh_skopeo(skopeo).pull, two_url, tag, out / "two", fmt="dir"))
            for side in ("cold", "warm", "two"):  # the same files came back every time
                assert sorted(os.listdir(out / side)) == sorted(os.listdir(out / "ref")), side
            shutil.rmtree(out)
            # The servers' side of a pull of the big layer, without skopeo's hashing and writing.
            await meter.measure("curl_reference", partial(curl_get, reference + blob), client="curl")
            await meter.measure("curl_agent_one_warm", partial(curl_get, one_url + blob), client="curl")
            for name, client in clients.items():
                await client_pulls(cluster, herd, meter, name, client, rep, reference, one_url, tag)
        finally:
            await cluster.stop()
            shutil.rmtree(layout, ignore_errors=True)
            shutil.rmtree(cluster.work, ignore_errors=True)


async def client_pulls(cluster: Cluster, herd: Any, meter: Meter, name: str, client: Any, rep: int,
                       reference: str, warm: str, tag: str) -> None:
    """``name`` pulls the image from docker-registry, from the warm agent one, and from a fresh
    agent (cold); the image is removed from the client's store after each pull."""
    fresh = await cluster.agent(herd, f"{name}-cold-{rep}")
    meter.pids["agent_cold"] = pid(fresh)
    daemon = getattr(client, "daemon", None)
    if daemon is not None:  # dockerd or containerd does the pull's work
        meter.pids[daemon.name] = daemon.process.pid
    try:
        for phase, registry in (("reference", reference), ("agent_one_warm", warm),
                                ("agent_cold", fresh.url("agent", "registry"))):
            ref = f"{hostport(registry)}/{tag}"
            await meter.measure(f"{name}_pull_{phase}", partial(client_pull, name, client, ref), client=name)
            await client_remove(name, client, ref)
    finally:
        if daemon is not None:
            meter.pids.pop(daemon.name, None)
        meter.pids.pop("agent_cold", None)
        await fresh.stop()


async def client_pull(name: str, client: Any, ref: str) -> None:
    if name == "ctr":
        await client.pull(ref)
    elif name == "podman":
        await client.pull(ref)
    else:
        await client("pull", ref)


async def client_remove(name: str, client: Any, ref: str) -> None:
    """Forget the image and its layers, so that the next pull fetches every byte again."""
    if name == "ctr":
        await client("images", "rm", "--sync", ref)
        await client("content", "prune", "references", check=False)
    elif name == "podman":
        await client("rmi", "--force", ref)
    else:
        await client("rmi", "--force", ref)
        await client("image", "prune", "--force")


def pid(process: Any) -> int:
    assert process.process is not None
    return int(process.process.pid)


def registry_pid(url: str) -> int:
    """The pid of the docker-registry listening at ``url`` (a child of this process)."""
    port = url.rsplit(":", 1)[1]
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[1]) == me and b"docker-registry" in cmdline:
            config = cmdline.split(b"\0")[2].decode()
            if f":{port}" in Path(config).read_text():
                return int(entry)
    raise RuntimeError(f"no docker-registry child listens at {url}")


@contextmanager
def running_clients(work: Path, names: list[str]) -> Iterator[dict[str, Any]]:
    """The clients asked for, each with its own daemon (dockerd, containerd) or store (podman)."""
    with ExitStack() as stack:
        clients: dict[str, Any] = {}
        for name in names:
            if name == "docker":
                docker: Docker = stack.enter_context(running_dockerd(work / "clients"))
                clients[name] = docker
            elif name == "ctr":
                ctr: Containerd = stack.enter_context(running_containerd(work / "clients"))
                clients[name] = ctr
            elif name == "podman":
                root = Path(tempfile.mkdtemp(prefix="sr-podman-", dir="/tmp"))
                stack.callback(shutil.rmtree, root, ignore_errors=True)
                clients[name] = Podman(shutil.which("podman") or "podman", root, containers_env(root / "user"))
            else:
                raise SystemExit(f"--clients: unknown client {name!r} (docker, podman, ctr)")
        yield clients


async def head_rps(url: str, seconds: float, connections: int) -> float:
    """Manifest HEAD requests per second on ``url`` from a trio/httpx load generator in this process
    (wrk waits for a body after a HEAD answer with a Content-Length, so it cannot do this)."""
    done = 0
    deadline = trio.current_time() + seconds
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
        async def worker() -> None:
            nonlocal done
            while trio.current_time() < deadline:
                response = await client.head(url, headers={"Accept": ACCEPT})
                response.raise_for_status()
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
    return done / seconds


async def head_runs(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Manifest HEADs per second on a warm agent and on docker-registry (one small image)."""
    skopeo = Skopeo(shutil.which("skopeo") or "skopeo", work / "skopeo", containers_env(work / "home-head"))
    layout = work / "layout-head"
    await trio.to_thread.run_sync(partial(build_oci_layout, layout, [64 << 10], seed=999))
    cluster = Cluster(work / "cluster-head", QUIET)
    with reference_registry_at(work, "docker-registry-head") as reference:
        try:
            herd = await cluster.herd()
            agent = await cluster.agent(herd, "agent-head")
            await fresh_skopeo(skopeo).push(layout, reference, "bench/head:v1")
            await fresh_skopeo(skopeo).push(layout, herd.url("proxy"), "bench/head:v1")
            path = "/v2/bench/head/manifests/v1"
            return {"agent": await head_rps(agent.url("agent", "registry") + path, args.seconds, args.connections),
                    "docker_registry": await head_rps(reference + path, args.seconds, args.connections),
                    "tool": "python (trio + httpx)", "connections": args.connections, "seconds": args.seconds}
        finally:
            await cluster.stop()


def summary(meter: Meter) -> dict[str, Any]:
    med = statistics.median
    wall = {phase: med(values) for phase, values in meter.wall.items()}
    cpu = {phase: {name: med(values) for name, values in per.items()} for phase, per in meter.cpu.items()}
    ratios = {phase: wall[phase] / wall[base] for phase, base in RATIOS.items() if phase in wall and base in wall}
    for phase in wall:  # the clients' pulls, each against its own pull from docker-registry
        client, _, where = phase.partition("_pull_")
        if where and where != "reference" and f"{client}_pull_reference" in wall:
            ratios[phase] = wall[phase] / wall[f"{client}_pull_reference"]
    if "curl_agent_one_warm" in wall:
        ratios["curl_agent_one_warm"] = wall["curl_agent_one_warm"] / wall["curl_reference"]
    return {"wall_median_s": wall, "cpu_median_s": cpu, "ratios": ratios}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-registry-", dir=args.workdir))
    size = parse_size(args.size)
    meter = Meter()
    clients = [name for name in args.clients.split(",") if name]
    try:
        with running_clients(work, clients) as running:
            for rep in range(args.repeat):
                await repetition(work, rep, size, meter, Path(args.profile) if args.profile else None, running)
        head = await head_runs(work, args) if args.seconds > 0 else None
        return {"size": size, "repeat": args.repeat, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                "wall_s": meter.wall, "cpu_s": meter.cpu, **summary(meter), "head_rps": head}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    wall, cpu, ratios = results["wall_median_s"], results["cpu_median_s"], results["ratios"]
    print(f"\nregistry benchmark, {results['date']}, {results['cores']} cores, loopback, image = "
          f"{results['size'] / (1 << 20):g} MiB + 64 KiB layers, medians of {results['repeat']}\n")
    # The processes that used any CPU, the clients first.
    busy = {name for per in cpu.values() for name, seconds in per.items() if seconds > 0}
    names = sorted(busy, key=lambda n: (n not in (SKOPEO, "curl", "docker", "podman", "ctr"), n))
    print("| phase | wall | vs docker-registry | " + " | ".join(f"CPU {n}" for n in names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for phase, seconds in wall.items():
        ratio = f"{ratios[phase]:.2f}x" if phase in ratios else ""
        cells = [f"{cpu[phase][n]:.2f}" if n in cpu[phase] else "" for n in names]
        print(f"| {phase} | {seconds:.2f} s | {ratio} | " + " | ".join(cells) + " |")
    head = results.get("head_rps")
    if head:
        print(f"\nmanifest HEAD ({head['tool']}, {head['connections']} connections): agent {head['agent']:.0f} "
              f"req/s, docker-registry {head['docker_registry']:.0f} req/s "
              f"({head['agent'] / head['docker_registry']:.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="the big layer's size (uncompressed random bytes)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", default="", help="comma-separated: docker, podman, ctr")
    parser.add_argument("--seconds", type=float, default=5, help="length of each HEAD load run (0: none)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--profile", help="write py-spy profiles of the first repetition here")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    run_and_report(parser, main, report)
