#!/usr/bin/env python3
"""Benchmark the registry with skopeo and a load generator, against Debian's docker-registry in the same run.

Each repetition uses a new image (a 256 MiB random layer and a small one), so every push uploads
and every cold pull goes through the swarm:

1. skopeo push to the proxy and to docker-registry;
2. skopeo pull from a fresh agent (cold: through the swarm), from the same agent again (warm),
   and from docker-registry;
3. the big layer fetched with curl from a fresh agent (cold), from a warm agent and from
   docker-registry: the servers' side of the pull, without skopeo's own hashing and writing;
4. manifest HEAD requests per second on an agent's registry port and on docker-registry,
   from a Python load generator (trio + httpx) in the same process.

Run from the repository root as root (skopeo and docker-registry come from Debian):
``.venv/bin/python scripts/bench_registry.py [--repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import run_and_report
from netsim.cluster import QUIET, Cluster
from swarmreg.config import parse_size
from tests.clients.clients import Skopeo, containers_env
from tests.clients.layout import build_oci_layout
from tests.clients.registry import reference_registry_at

# docker-registry answers 404 to a manifest request that does not accept the manifest's type.
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def curl_get(url: str) -> float:
    """Seconds curl takes to GET ``url`` into /dev/null (failing on an HTTP error)."""
    result = await trio.run_process(["curl", "-sSf", "-o", "/dev/null", "-w", "%{time_total}", url],
                                    capture_stdout=True)
    return float(result.stdout)


async def skopeo_runs(work: Path, layer: int, reference: str,
                      repeat: int) -> tuple[dict[str, list[float]], Cluster, str]:
    """The skopeo and curl timings; the cluster, still running, and its last agent's registry."""
    skopeo = Skopeo(shutil.which("skopeo") or "skopeo", work / "skopeo", {})
    cluster = Cluster(work / "cluster", QUIET)  # a herd (origin, tracker, index, proxy) and agents
    herd = await cluster.herd()
    proxy = f"http://{herd.address('proxy')}"
    results: dict[str, list[float]] = {k: [] for k in ("push_reference", "push_proxy", "pull_reference",
                                                         "pull_agent_cold", "pull_agent_warm",
                                                         "curl_reference", "curl_agent_cold", "curl_agent_warm")}
    for rep in range(repeat):
        layout = work / f"layout-{rep}"
        image = await trio.to_thread.run_sync(partial(build_oci_layout, layout, [layer, 64 << 10], seed=rep))
        # A fresh blob-info cache every time: skopeo would skip blobs it believes a registry has.
        skopeo.env = containers_env(work / f"home-{rep}")
        repo, tag = "bench/image", f"bench/image:r{rep}"
        results["push_reference"].append(await timed(partial(skopeo.push, layout, reference, tag)))
        results["push_proxy"].append(await timed(partial(skopeo.push, layout, proxy, tag)))
        out = work / f"out-{rep}"
        out.mkdir()
        results["pull_reference"].append(await timed(partial(skopeo.pull, reference, tag, out / "ref", fmt="dir")))
        # A cold curl first, from an agent stopped straight after, so each cold pull has the origin alone.
        blob = f"/v2/{repo}/blobs/{image.layers[0].digest}"
        fresh = await cluster.agent(herd, f"curl{rep}")
        results["curl_agent_cold"].append(await curl_get(f"http://{fresh.address('agent', 'registry')}{blob}"))
        await fresh.stop()
        agent = await cluster.agent(herd, f"agent{rep}")
        registry = f"http://{agent.address('agent', 'registry')}"
        results["pull_agent_cold"].append(await timed(partial(skopeo.pull, registry, tag, out / "cold", fmt="dir")))
        results["pull_agent_warm"].append(await timed(partial(skopeo.pull, registry, tag, out / "warm", fmt="dir")))
        for side in ("ref", "cold", "warm"):  # the same bytes came back every time
            assert sorted(os.listdir(out / side)) == sorted(os.listdir(out / "ref"))
        shutil.rmtree(out)
        results["curl_agent_warm"].append(await curl_get(registry + blob))
        results["curl_reference"].append(await curl_get(reference + blob))
        shutil.rmtree(layout)
    last_agent = cluster.processes[-1]
    return results, cluster, f"http://{last_agent.address('agent', 'registry')}"


async def python_rps(url: str, seconds: float, connections: int) -> float:
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


async def head_rps(url: str, seconds: float, connections: int) -> float:
    """HEAD requests per second on ``url`` from a trio/httpx load generator in this process.

    (wrk waits for a body after a HEAD response with a Content-Length, so it cannot do this.)
    """
    return await python_rps(url, seconds, connections)


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-registry-", dir=args.workdir))
    try:
        with reference_registry_at(work, "docker-registry") as reference:
            runs, cluster, agent_registry = await skopeo_runs(work, parse_size(args.layer), reference, args.repeat)
            path = "/v2/bench/image/manifests/r0"
            agent_rps = await head_rps(agent_registry + path, args.seconds, args.connections)
            reference_rps = await head_rps(reference + path, args.seconds, args.connections)
            await cluster.stop()
        return {"layer": parse_size(args.layer), "repeat": args.repeat, "skopeo_s": runs,
                "head_rps": {"agent": agent_rps, "docker_registry": reference_rps, "tool": "python (trio + httpx)",
                             "connections": args.connections, "seconds": args.seconds}}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> None:
    med = statistics.median
    runs, head = results["skopeo_s"], results["head_rps"]
    print(f"\nregistry benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, loopback, "
          f"image = {results['layer'] >> 20} MiB + 64 KiB layers, medians of {results['repeat']}\n")
    print("| measurement | swarmreg | docker-registry | ratio (swarmreg / docker-registry) |")
    print("|---|---|---|---|")
    print(f"| skopeo push to the proxy | {med(runs['push_proxy']):.2f} s | {med(runs['push_reference']):.2f} s "
          f"| {med(runs['push_proxy']) / med(runs['push_reference']):.2f}x |")
    for key, what in (("pull_agent_cold", "skopeo pull, cold agent (swarm)"),
                      ("pull_agent_warm", "skopeo pull, warm agent (local)")):
        print(f"| {what} | {med(runs[key]):.2f} s | {med(runs['pull_reference']):.2f} s "
              f"| {med(runs[key]) / med(runs['pull_reference']):.2f}x |")
    for key, what in (("curl_agent_cold", "curl GET of the big layer, cold agent (swarm)"),
                      ("curl_agent_warm", "curl GET of the big layer, warm agent (local)")):
        print(f"| {what} | {med(runs[key]):.2f} s | {med(runs['curl_reference']):.2f} s "
              f"| {med(runs[key]) / med(runs['curl_reference']):.2f}x |")
    print(f"| manifest HEAD on an agent ({head['tool']}, {head['connections']} connections) "
          f"| {head['agent']:.0f} req/s | {head['docker_registry']:.0f} req/s "
          f"| {head['agent'] / head['docker_registry']:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="256MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each HEAD load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    run_and_report(parser, main, report)
