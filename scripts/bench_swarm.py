#!/usr/bin/env python3
"""Benchmark the swarm with real daemons on loopback; every figure beside a peer measured in the same run.

1. cold pull: a blob through one agent that does not hold it, against a plain HTTP GET of
   the same blob from the origin (both streamed to a hashing client);
2. time to first byte of a cold pull of a large blob through an agent, against the origin's;
3. N agents pulling one blob at once under rate limits, against the lower bound
   T* = max(F/u_origin, F/d_agent, N*F/(u_origin + sum of u_agents)).

Run from the repository root: ``.venv/bin/python scripts/bench_swarm.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import run_and_report
from netsim.cluster import QUIET, Cluster
from netsim.images import make_blob
from swarmreg.config import Address, parse_size
from swarmreg.devcluster import DaemonProcess
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginClient

MiB = 1 << 20
NS = "bench/swarm"
HERD = ("origin", "tracker")  # a herd with no registry roles: the swarm alone


async def upload(origin: DaemonProcess, path: Path, digest: str, tls: ssl.SSLContext | None = None) -> None:
    """Kraken's chunked upload (the project's OriginClient), then the metainfo, so that the origin
    has built the torrent before pulls are timed."""
    async with OriginClient(Address.parse(origin.address("origin")), timeout=600, tls=tls) as client:
        await client.upload_file(NS, Digest.parse(digest), path, through=False)
    async with httpx.AsyncClient(timeout=600, verify=tls or True) as client:
        scheme = "https" if tls else "http"
        url = f"{scheme}://{origin.address('origin')}/namespace/{NS.replace('/', '%2F')}/blobs/{digest}/metainfo"
        (await client.get(url)).raise_for_status()


async def pull(url: str, digest: str) -> tuple[float, float]:
    """Stream ``url`` into sha256; returns (seconds to first byte, seconds in all); checks the digest."""
    hasher = hashlib.sha256()
    started = time.perf_counter()
    first = None
    async with httpx.AsyncClient(timeout=600) as client:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw(4 * MiB):
                if first is None:
                    first = time.perf_counter() - started
                hasher.update(chunk)
    total = time.perf_counter() - started
    if "sha256:" + hasher.hexdigest() != digest:
        raise SystemExit(f"{url} returned the wrong content")
    return first or total, total


def blob_url(process: DaemonProcess, role: str, digest: str) -> str:
    return f"{process.url(role)}/namespace/{NS.replace('/', '%2F')}/blobs/{digest}"


async def stats(process: DaemonProcess, role: str) -> dict:
    async with httpx.AsyncClient(timeout=60) as client:
        return (await client.get(f"{process.url(role)}/stats")).json()["totals"]


async def bench_cold_pull(work: Path, size: int, repeat: int) -> dict:
    blob = work / "blob"
    digest = make_blob(blob, size)
    cluster = Cluster(work / "cold", QUIET)
    herd = await cluster.herd(roles=HERD)
    await upload(herd, blob, digest)
    direct, swarm, ttfb = [], [], []
    for rep in range(repeat):
        direct.append((await pull(blob_url(herd, "origin", digest), digest))[1])
        agent = await cluster.agent(herd, f"agent{rep}")  # a fresh agent: the pull is cold
        first, total = await pull(blob_url(agent, "agent", digest), digest)
        swarm.append(total)
        ttfb.append(first)
    await cluster.stop()
    blob.unlink()
    return {"size": size, "origin_http_get_s": direct, "agent_cold_pull_s": swarm, "agent_ttfb_s": ttfb,
            "ratio": statistics.median(swarm) / statistics.median(direct)}


async def bench_ttfb(work: Path, size: int, repeat: int) -> dict:
    blob = work / "big"
    digest = make_blob(blob, size)
    cluster = Cluster(work / "ttfb", QUIET)
    herd = await cluster.herd(roles=HERD)
    await upload(herd, blob, digest)
    blob.unlink()
    origin, agent_runs = [], []
    for rep in range(repeat):
        origin.append(await pull(blob_url(herd, "origin", digest), digest))
        agent = await cluster.agent(herd, f"agent{rep}")
        agent_runs.append(await pull(blob_url(agent, "agent", digest), digest))
    await cluster.stop()
    return {"size": size, "origin_ttfb_s": [r[0] for r in origin], "origin_total_s": [r[1] for r in origin],
            "agent_ttfb_s": [r[0] for r in agent_runs], "agent_total_s": [r[1] for r in agent_runs]}


async def bench_swarm(work: Path, size: int, agents: int, u_origin: int, u_agent: int, d_agent: int,
                      overrides: list[str], herd_overrides: list[str]) -> dict:
    blob = work / "swarm-blob"
    digest = make_blob(blob, size)
    cluster = Cluster(work / "swarm", QUIET)
    herd = await cluster.herd(f"swarm.upload_rate_limit={u_origin}", *herd_overrides, roles=HERD)
    await upload(herd, blob, digest)
    blob.unlink()
    members = [await cluster.agent(herd, f"agent{i}", f"swarm.upload_rate_limit={u_agent}",
                                   f"swarm.download_rate_limit={d_agent}", *overrides) for i in range(agents)]
    times: list[float] = []
    ttfbs: list[float] = []

    async def one(agent: DaemonProcess) -> None:
        first, total = await pull(blob_url(agent, "agent", digest), digest)
        times.append(total)
        ttfbs.append(first)

    async with trio.open_nursery() as nursery:
        for agent in members:
            nursery.start_soon(one, agent)
    await trio.sleep(1.5)  # one more sample of the per-peer counters
    origin_sent = (await stats(herd, "origin"))["uploaded"]
    from_agents = sum([(await stats(a, "agent"))["downloaded_from"]["agent"] for a in members])
    received = sum([(await stats(a, "agent"))["downloaded"] for a in members])
    await cluster.stop()
    bound = max(size / u_origin, size / d_agent, agents * size / (u_origin + agents * u_agent))
    times.sort()
    return {"size": size, "agents": agents, "u_origin": u_origin, "u_agent": u_agent, "d_agent": d_agent,
            "lower_bound_s": bound, "completion_s": times, "ttfb_s": sorted(ttfbs),
            "p50_vs_bound": statistics.median(times) / bound, "max_vs_bound": times[-1] / bound,
            "origin_egress_x": origin_sent / size, "share_from_agents": from_agents / max(received, 1),
            "received_x": received / (agents * size)}


def report(results: dict) -> None:
    print(f"\nswarm benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, loopback\n")
    print("| measurement | swarmreg | compared with | ratio |")
    print("|---|---|---|---|")
    if "cold_pull" in results:
        report_cold(results["cold_pull"], results["ttfb"])
    if "swarm" in results:
        report_swarm(results["swarm"])


def report_cold(cold: dict, ttfb: dict) -> None:
    med = statistics.median
    print(f"| cold pull of {cold['size'] // MiB} MiB through one agent | {med(cold['agent_cold_pull_s']):.2f} s "
          f"| plain HTTP GET from the origin: {med(cold['origin_http_get_s']):.2f} s | {cold['ratio']:.2f}x |")
    print(f"| time to first byte, cold {ttfb['size'] // MiB} MiB pull via an agent | {med(ttfb['agent_ttfb_s']):.2f} s "
          f"| the origin's own: {med(ttfb['origin_ttfb_s']):.3f} s | - |")
    print(f"| whole cold {ttfb['size'] // MiB} MiB pull via an agent | {med(ttfb['agent_total_s']):.2f} s "
          f"| HTTP GET from the origin: {med(ttfb['origin_total_s']):.2f} s "
          f"| {med(ttfb['agent_total_s']) / med(ttfb['origin_total_s']):.2f}x |")


def report_swarm(swarm: dict) -> None:
    med = statistics.median
    times = swarm["completion_s"]
    print(f"| {swarm['agents']} agents, {swarm['size'] // MiB} MiB, p50 / max completion | "
          f"{med(times):.2f} / {times[-1]:.2f} s | lower bound T* = {swarm['lower_bound_s']:.2f} s "
          f"| {swarm['p50_vs_bound']:.2f}x / {swarm['max_vs_bound']:.2f}x |")
    print(f"| same, origin egress | {swarm['origin_egress_x']:.2f}x the blob | one copy | - |")
    print(f"| same, bytes agents got from agents | {100 * swarm['share_from_agents']:.0f}% | - | - |")
    print(f"| same, bytes agents received | {swarm['received_x']:.2f}x what they needed | - | - |")
    print(f"\nrate limits: origin up {swarm['u_origin'] / MiB:g} MiB/s, agents up {swarm['u_agent'] / MiB:g} MiB/s "
          f"and down {swarm['d_agent'] / MiB:g} MiB/s; cold pulls and TTFB unlimited.")


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-swarm-", dir=args.workdir))
    try:
        results = {}
        if args.only in (None, "cold"):
            results["cold_pull"] = await bench_cold_pull(work, parse_size(args.size), args.repeat)
            results["ttfb"] = await bench_ttfb(work, parse_size(args.ttfb_size), args.repeat)
        if args.only in (None, "swarm"):
            results["swarm"] = await bench_swarm(
                work, parse_size(args.swarm_size), args.agents, parse_size(args.u_origin),
                parse_size(args.u_agent), parse_size(args.d_agent), args.set, args.set_herd)
        return results
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="cold pull blob size")
    parser.add_argument("--ttfb-size", default="1GiB", help="blob size for the time-to-first-byte pull")
    parser.add_argument("--swarm-size", default="64MiB")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--u-origin", default="20MiB", help="origin upload rate limit per second")
    parser.add_argument("--u-agent", default="10MiB", help="agent upload rate limit per second")
    parser.add_argument("--d-agent", default="40MiB", help="agent download rate limit per second")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["cold", "swarm"], help="run one part")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the swarm part's agents (repeatable)")
    parser.add_argument("--set-herd", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the swarm part's herd (repeatable)")
    parser.add_argument("--workdir", help="where to put blobs and daemon data (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", help="write every number here")
    run_and_report(parser, main, report)
