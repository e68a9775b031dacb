#!/usr/bin/env python3
"""Benchmark an origin fetching a blob from an upstream registry: request to torrent seeded.

Debian's docker-registry (CNCF distribution 2.8) on loopback holds one random blob (256 MiB by
default). For each repetition a fresh ``swarmreg daemon --roles origin`` child process, whose
``[[registries]]`` name that upstream, is asked for the blob's metainfo in the namespace
``127.0.0.1:PORT/bench/blob``: the answer comes once the blob is fetched, verified, hashed into
its torrent and seeded. Reported: the wall time of that request and the CPU seconds the origin
process spent on it (user + system, from /proc), and the docker-registry's.

``--tree DIR`` runs the daemon from another checkout (say, a worktree of an older commit) to
compare; the default is this one. Run from the repository root:
``.venv/bin/python scripts/bench_origin_fetch.py [--size 256MiB] [--repeat 5] [--tree DIR] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import run_and_report
from swarmreg.config import parse_size
from tests.upstream.registries import docker_registry, push_blob

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def registry_pid(port: int) -> int | None:
    """The docker-registry serving ``port`` (found by its config file's port line)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"docker-registry") and len(cmdline) > 2:
                try:
                    if f"127.0.0.1:{port}" in Path(cmdline[2].decode()).read_text():
                        return int(proc.name)
                except OSError:
                    continue
    return None


async def one_fetch(work: Path, tree: Path, upstream: str, digest: str, rep: int) -> dict[str, float]:
    data_dir = work / f"origin-{rep}"
    data_dir.mkdir()
    config = data_dir / "origin.toml"
    config.write_text(f'[[registries]]\nname = "{upstream}"\nscheme = "http"\n')
    ready = data_dir / "ready.json"
    argv = [sys.executable, "-m", "swarmreg", "daemon", "--roles", "origin", "--config", str(config),
            "--data-dir", str(data_dir), "--ready-file", str(ready), "--set", "origin.listen=127.0.0.1:0",
            "--set", "swarm.listen=127.0.0.1:0", "--set", "store.fsync=false", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(data_dir / "daemon.log", "wb") as log:
        process = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(60):
            while not ready.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"the origin exited: {(data_dir / 'daemon.log').read_text()[-2000:]}")
                await trio.sleep(0.05)
        address = json.loads(ready.read_text())["roles"]["origin"]["http"]
        namespace = f"{upstream}/bench/blob".replace("/", "%2F")
        url = f"http://{address}/namespace/{namespace}/blobs/{digest}/metainfo"
        upstream_pid = registry_pid(int(upstream.rpartition(":")[2]))
        async with httpx.AsyncClient(timeout=600) as client:
            cpu_before = cpu_seconds(process.pid)
            upstream_before = cpu_seconds(upstream_pid) if upstream_pid else 0.0
            started = time.perf_counter()
            response = await client.get(url)
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(process.pid) - cpu_before
            upstream_cpu = (cpu_seconds(upstream_pid) - upstream_before) if upstream_pid else float("nan")
            response.raise_for_status()
            stats = (await client.get(f"http://{address}/stats")).json()
        assert [t["complete"] for t in stats["torrents"]] == [True], stats
        return {"seconds": seconds, "origin_cpu_s": cpu, "upstream_cpu_s": upstream_cpu}
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(data_dir / "blobs", ignore_errors=True)  # 256 MiB a run: keep only the logs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-fetch-", dir=args.workdir))
    tree = Path(args.tree).resolve() if args.tree else ROOT
    try:
        with docker_registry(work) as port:
            upstream = f"127.0.0.1:{port}"
            data = os.urandom(size)
            digest = await push_blob(f"http://{upstream}", "bench/blob", data)
            del data
            runs = [await one_fetch(work, tree, upstream, digest, rep) for rep in range(args.repeat)]
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        return {"size": size, "repeat": args.repeat, "tree": str(tree), "commit": commit, "runs": runs}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    runs = results["runs"]

    def med(key: str) -> float:
        return float(statistics.median(run[key] for run in runs))

    print(f"\norigin fetch from an upstream, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, loopback, "
          f"blob = {results['size'] >> 20} MiB, commit {results['commit']}, medians of {results['repeat']}\n")
    print("| request to torrent seeded | origin CPU | docker-registry CPU | throughput |")
    print("|---|---|---|---|")
    print(f"| {med('seconds'):.2f} s | {med('origin_cpu_s'):.2f} s | {med('upstream_cpu_s'):.2f} s "
          f"| {results['size'] / med('seconds') / 1e6:.0f} MB/s |")
    print("runs:", ", ".join(f"{run['seconds']:.2f} s / {run['origin_cpu_s']:.2f} cpu-s" for run in runs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", help="run the origin from this checkout (default: this one)")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    run_and_report(parser, main, report)
