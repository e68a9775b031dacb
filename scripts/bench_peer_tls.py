#!/usr/bin/env python3
"""Benchmark the price of cluster TLS on the peer wire: a cold pull through one agent on a plain
cluster against the same pull on a cluster with [tls] (SSL torrents), in the same run.

Each repetition starts a fresh agent, so every pull goes through the swarm; the agent's blob API
(not under cluster TLS) is read by the same hashing client in both modes.
Run from the repository root: ``.venv/bin/python scripts/bench_peer_tls.py [--repeat 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import run_and_report
from bench_swarm import HERD, blob_url, pull, upload
from netsim.cluster import QUIET, Cluster
from netsim.images import make_blob
from swarmreg.config import parse_size
from swarmreg.devcluster import make_dev_certs, tls_overrides

MiB = 1 << 20


async def mode_runs(work: Path, blob: Path, digest: str, repeat: int, certs: Path | None) -> list[float]:
    """Cold pulls through fresh agents; ``certs``: the whole cluster on mutual TLS."""
    cluster = Cluster(work / ("tls" if certs else "plain"), QUIET)
    tls = list(tls_overrides(certs, "node")) if certs else []
    herd = await cluster.herd(*tls, roles=HERD)
    client_tls = None
    if certs:
        client_tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        client_tls.load_cert_chain(certs / "node.pem", certs / "node.key")
    await upload(herd, blob, digest, client_tls)
    await trio.sleep(1.5)  # a libtorrent session turns SSL peers away for about its first second
    times = []
    for rep in range(repeat):
        agent = await cluster.agent(herd, f"agent{rep}", *tls)
        times.append((await pull(blob_url(agent, "agent", digest), digest))[1])
        await agent.stop()
    await cluster.stop()
    return times


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-tls-", dir=args.workdir))
    try:
        certs = work / "certs"
        # One certificate for every node of the bench; the upload to the origin needs a writer's role.
        make_dev_certs(certs, {"node": ("origin", "tracker", "index", "proxy", "agent")})
        blob = work / "blob"
        digest = make_blob(blob, parse_size(args.size))
        plain = await mode_runs(work, blob, digest, args.repeat, None)
        secure = await mode_runs(work, blob, digest, args.repeat, certs)
        return {"size": parse_size(args.size), "repeat": args.repeat, "plain_s": plain, "tls_s": secure,
                "ratio": statistics.median(secure) / statistics.median(plain)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> None:
    med = statistics.median
    size = results["size"]
    print(f"\npeer-wire TLS benchmark, {time.strftime('%Y-%m-%d')}, loopback, {size >> 20} MiB cold pull "
          f"through one agent, medians of {results['repeat']}\n")
    print("| peer wire | cold pull | throughput |\n|---|---|---|")
    for key, what in (("plain_s", "plain TCP"), ("tls_s", "SSL torrents (cluster TLS)")):
        print(f"| {what} | {med(results[key]):.2f} s | {size / med(results[key]) / 1e6:.0f} MB/s |")
    print(f"\nratio TLS / plain: {results['ratio']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir")
    parser.add_argument("--json")
    run_and_report(parser, main, report)
