#!/usr/bin/env python3
"""How long a ring of origins takes to give ``--blobs`` blobs back to an origin that returns
(issue 15, item 9).

Three origins, each its own ``swarmreg daemon --roles origin`` process on 127.0.0.1, in one ring
(``[cluster] origins``, ``origin.replicas = 3``: every origin owns every blob, so the returning
one must receive all of them), with the shipped ``cluster.health_interval``:

1. ``upload``: with origin C not running, the blobs are uploaded to A (Kraken's upload API, 8 at
   a time); A sends each to B at once and keeps its obligation to C on disk.
2. ``returned``: C starts on an empty disk; timed from its start until it holds every blob and A
   owes nothing (the queued obligations are sent).
3. ``lost disk``: C is stopped, its data directory wiped, and started again: nothing is queued
   now, so the blobs come back only because the others see C return as a new instance and repair;
   timed the same way.

Against, in the same run: a plain copy of the same files (``shutil.copyfile`` each, one after
another, with an fsync each, as the origin does) and the upload of phase 1. Prints seconds,
blobs/s and MB/s, and the CPU seconds of each origin per phase.

Run from the repository root: ``.venv/bin/python scripts/bench_repair.py [--blobs 1000]
[--size 256KiB]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_common import run_and_report  # noqa: E402
from netsim.cpu import machine_seconds, process_seconds  # noqa: E402
from swarmreg.devcluster import DaemonProcess  # noqa: E402
from tests.origin.helpers import upload_blob  # noqa: E402

NAMESPACE = "bench/repair"
UPLOADERS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "": 1}
    number = text.lower().rstrip("kmgib")
    return int(float(number) * units[text.lower()[len(number):]])


def held(data_dir: Path) -> int:
    blobs = data_dir / "blobs"
    return sum(1 for _ in blobs.glob("*/*/*")) if blobs.exists() else 0


def owed(data_dir: Path) -> int:
    queue = data_dir / "replication"
    return sum(1 for _ in queue.glob("sha256-*")) if queue.exists() else 0


class Ring:
    """The three origin processes, each on a port of its own that it keeps across restarts."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.addresses = {name: f"127.0.0.1:{free_port()}" for name in "abc"}
        members = "[" + ", ".join(f"'{a}'" for a in self.addresses.values()) + "]"
        self.options = [f"cluster.origins={members}", "origin.replicas=3", "shutdown_timeout=5"]
        self.running: dict[str, DaemonProcess] = {}

    def data_dir(self, name: str) -> Path:
        return self.workdir / name

    async def start(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (the daemon writes it until it stops)
        daemon = DaemonProcess(name, ["origin"], self.data_dir(name), stderr=log,
                               overrides=[f"origin.listen={self.addresses[name]}", "swarm.listen=127.0.0.1:0",
                                          *self.options],
                               env={"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        await daemon.start()
        self.running[name] = daemon

    async def stop(self, name: str) -> None:
        await self.running.pop(name).stop()

    def cpu(self) -> dict[str, float]:
        return {name: process_seconds(d.process.pid) for name, d in self.running.items() if d.process}


async def timed(ring: Ring, work: Any) -> dict[str, Any]:
    """Run ``work()``; its seconds, the origins' CPU seconds and the machine's busy share."""
    cpu, machine, started = ring.cpu(), machine_seconds(), time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    busy, total, _ = (after - first for after, first in zip(machine_seconds(), machine, strict=True))
    return {"seconds": seconds, "cpu_s": {n: s - cpu.get(n, 0.0) for n, s in ring.cpu().items()},
            "machine_busy": busy / total if total else 0.0}


async def until_whole(ring: Ring, count: int) -> None:
    c, a = ring.data_dir("c"), ring.data_dir("a")
    while held(c) < count or owed(a):
        await trio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="swarmreg-bench-repair-", dir=args.workdir))
    size = parse_size(args.size)
    sources = workdir / "sources"
    sources.mkdir()
    files = []
    for n in range(args.blobs):
        path = sources / f"{n:05d}"
        path.write_bytes(os.urandom(size))
        files.append(path)
    results: dict[str, Any] = {"blobs": args.blobs, "size": size, "phases": {}}

    def copy_all() -> None:
        target = workdir / "copy"
        target.mkdir()
        for path in files:
            shutil.copyfile(path, target / path.name)
            with open(target / path.name, "rb+") as file:
                os.fsync(file.fileno())

    ring = Ring(workdir)
    try:
        started = time.perf_counter()
        await trio.to_thread.run_sync(copy_all)
        results["phases"]["file copy"] = {"seconds": time.perf_counter() - started, "cpu_s": {}}
        await ring.start("a")
        await ring.start("b")

        async def upload() -> None:
            async with httpx.AsyncClient(base_url=f"http://{ring.addresses['a']}", timeout=120) as client:
                queue = iter(files)

                async def uploader() -> None:
                    for path in queue:
                        await upload_blob(client, NAMESPACE, path.read_bytes())

                async with trio.open_nursery() as nursery:
                    for _ in range(UPLOADERS):
                        nursery.start_soon(uploader)
            while held(ring.data_dir("b")) < args.blobs:  # A's replicas to B are part of the upload
                await trio.sleep(0.05)

        results["phases"]["upload"] = await timed(ring, upload)

        async def returned() -> None:
            await ring.start("c")
            await until_whole(ring, args.blobs)

        results["phases"]["returned"] = await timed(ring, returned)
        await ring.stop("c")
        shutil.rmtree(ring.data_dir("c"))

        results["phases"]["lost disk"] = await timed(ring, returned)
        return results
    finally:
        for name in list(ring.running):
            await ring.stop(name)
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    count, size = results["blobs"], results["size"]
    print(f"\nre-replication, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {count} blobs of "
          f"{size >> 10} KiB, 3 origins\n")
    print("| phase | seconds | blobs/s | MB/s | x file copy | CPU s (a / b / c) | machine busy |")
    print("|---|---|---|---|---|---|---|")
    base = results["phases"]["file copy"]["seconds"]
    for name, row in results["phases"].items():
        cpu = " / ".join(f"{row['cpu_s'].get(n, 0.0):.1f}" for n in "abc") if row["cpu_s"] else "-"
        busy = f"{row['machine_busy'] * 100:.0f}%" if "machine_busy" in row else "-"
        print(f"| {name} | {row['seconds']:.2f} | {count / row['seconds']:.0f} | "
              f"{count * size / row['seconds'] / 1e6:.1f} | {row['seconds'] / base:.1f}x | {cpu} | {busy} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=1000, help="how many blobs")
    parser.add_argument("--size", default="256KiB", help="each blob's size")
    parser.add_argument("--workdir", default=None, help="where the daemons' data and logs go (a temp dir)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    run_and_report(parser, main, report)
