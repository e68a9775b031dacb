#!/usr/bin/env python3
"""Manifest requests through the proxy with the index on SQLite, on PostgreSQL, and on two
PostgreSQL index nodes (issue 15, item 9).

Each layout runs as separate daemon processes on 127.0.0.1, as a cluster would: one origin (the
blobs), the index node(s), and one proxy whose ``[cluster] indexes`` lists them; PostgreSQL is a
server of the benchmark's own (as the tests start it: tests/servers/postgres.py, fsync off).
An image is pushed, then for ``--seconds`` each, ``--connections`` keep-alive HTTP/1.1
connections of this script (a few lines over a socket; wrk cannot HEAD, ab cannot keep a
connection alive to hypercorn) send ``HEAD`` and then ``GET /v2/bench/app/manifests/latest``
one request after another (a pull's first request: the tag is resolved at the index on every
one; the proxy caches nothing).

Prints requests per second, median and p99 latency, each daemon's CPU cores over the phase (and
the load's own), the machine's busy share, and each layout's figures as a ratio of SQLite's,
measured in the same run.

Run from the repository root: ``.venv/bin/python scripts/bench_index_nodes.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_common import run_and_report  # noqa: E402
from netsim.cpu import machine_seconds, own_seconds, process_seconds  # noqa: E402
from swarmreg.devcluster import DaemonProcess, port_zero  # noqa: E402
from tests.proxy.helpers import DOCKER_MANIFEST, push_image  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402

ANONYMOUS = ('proxy.access=[{user = "anonymous", repositories = ".*", '
             'actions = ["pull", "push", "delete", "admin"]}]')
LAYOUTS = (("sqlite x1", 1, False), ("postgresql x1", 1, True), ("postgresql x2", 2, True))


def ring(addresses: list[str]) -> str:
    return "[" + ", ".join(f"'{a}'" for a in addresses) + "]"


async def start(workdir: Path, name: str, roles: list[str], *overrides: str) -> DaemonProcess:
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (the daemon writes it until it stops)
    daemon = DaemonProcess(name, roles, workdir / name, stderr=log,
                           overrides=[*port_zero(roles), "shutdown_timeout=5", *overrides],
                           env={"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    await daemon.start()
    return daemon


async def client(host: str, port: int, request: bytes, deadline: float, times: list[float],
                 failures: list[int]) -> None:
    """One keep-alive connection sending ``request`` until ``deadline``: each answer's latency."""
    stream = await trio.open_tcp_stream(host, port)
    buffer = b""
    async with stream:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await stream.send_all(request)
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(1)
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = 0 if request.startswith(b"HEAD") or not length else int(length.group(1))
            while len(buffer) < body:
                buffer += await stream.receive_some(65536)
            buffer = buffer[body:]
            times.append(time.perf_counter() - started)


async def load(url: str, method: str, seconds: float, connections: int,
               daemons: dict[str, DaemonProcess]) -> dict[str, Any]:
    """``connections`` clients sending ``method url`` for ``seconds``: rate, latencies, CPU."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {DOCKER_MANIFEST}\r\n"
               f"User-Agent: bench_index_nodes\r\n\r\n").encode()
    pids = {name: d.process.pid for name, d in daemons.items() if d.process}
    cpu = {name: process_seconds(pid) for name, pid in pids.items()}
    own, machine, started = own_seconds(), machine_seconds(), time.perf_counter()
    times: list[float] = []
    failures: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(client, host, port, request, started + seconds, times, failures)
    wall = time.perf_counter() - started
    busy, total, _ = (after - first for after, first in zip(machine_seconds(), machine, strict=True))
    ordered = sorted(times)
    cores = {name: (process_seconds(pid) - cpu[name]) / wall for name, pid in pids.items()}
    return {"requests_per_s": len(times) / wall, "p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3, "failed": len(failures),
            "cores": {**cores, "load": (own_seconds() - own) / wall},
            "machine_busy": busy / total if total else 0.0}


async def layout(workdir: Path, name: str, nodes: int, postgres: PostgresServer | None,
                 args: argparse.Namespace) -> dict[str, Any]:
    here = workdir / name.replace(" ", "-")
    here.mkdir()
    daemons: dict[str, DaemonProcess] = {}
    try:
        daemons["origin"] = await start(here, "origin", ["origin"])
        origins = f"cluster.origins={ring([daemons['origin'].address('origin')])}"
        database = [f"index.database={postgres.create_database()}"] if postgres else []
        for n in range(nodes):
            daemons[f"index{n}"] = await start(here, f"index{n}", ["index"], origins, *database)
        indexes = f"cluster.indexes={ring([daemons[f'index{n}'].address('index') for n in range(nodes)])}"
        daemons["proxy"] = await start(here, "proxy", ["proxy"], origins, indexes, ANONYMOUS)
        proxy = daemons["proxy"].url("proxy")
        async with httpx.AsyncClient(base_url=proxy, timeout=60) as client:
            await push_image(client, "bench/app", "latest", [os.urandom(4096)])
        url = f"{proxy}/v2/bench/app/manifests/latest"
        await load(url, "HEAD", 2, args.connections, daemons)  # warm-up, not kept
        return {method.lower(): await load(url, method, args.seconds, args.connections, daemons)
                for method in ("HEAD", "GET")}
    finally:
        for daemon in reversed(daemons.values()):
            await daemon.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="swarmreg-bench-index-", dir=args.workdir))
    postgres = PostgresServer()
    postgres.start()
    try:
        results = {"seconds": args.seconds, "connections": args.connections, "cores": os.cpu_count(),
                   "layouts": {}}
        for name, nodes, on_postgres in LAYOUTS:
            results["layouts"][name] = await layout(workdir, name, nodes, postgres if on_postgres else None, args)
            print(f"{name}: done", file=sys.stderr)
        return results
    finally:
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    print(f"\nmanifest requests through the proxy, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{results['cores']} cores, {results['connections']} keep-alive connections, "
          f"{results['seconds']:.0f} s per phase\n")
    print("| index | request | req/s (x SQLite) | p50 ms | p99 ms (x SQLite) | failed | proxy cores | "
          "index cores (each) | load cores | machine busy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = results["layouts"]["sqlite x1"]
    for name, phases in results["layouts"].items():
        for method, row in phases.items():
            ref = base[method]
            index = " + ".join(f"{c:.2f}" for n, c in row["cores"].items() if n.startswith("index"))
            print(f"| {name} | {method.upper()} | {row['requests_per_s']:.0f} "
                  f"({row['requests_per_s'] / ref['requests_per_s']:.2f}x) | {row['p50_ms']:.1f} | "
                  f"{row['p99_ms']:.1f} ({row['p99_ms'] / ref['p99_ms']:.2f}x) | "
                  f"{row['failed']} | {row['cores']['proxy']:.2f} | {index} | {row['cores']['load']:.2f} | "
                  f"{row['machine_busy'] * 100:.0f}% |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each phase loads the proxy")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections of the load")
    parser.add_argument("--workdir", default=None, help="where the daemons' data and logs go (a temp dir)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    run_and_report(parser, main, report)
