#!/usr/bin/env python3
"""Benchmark the herd's garbage collector on a large index, and what it costs the pulls meanwhile.

Before the herd starts, its data directory gets a synthetic index (real SQLite, written straight
into the index's schema): ``--manifests`` manifest records in 1,000 repositories, each naming two
of ``--layers`` layer blobs, with blob links old enough to be past the grace period; and real
zero-length files in the blob store for every manifest and layer, two days old. ``--unreferenced``
of the layers no manifest names: half of them linked (the links are stale), half not. Then:

1. a small real image is pushed through the proxy (young: the collector must keep it);
2. pull latency without a collection: GET of its manifest and of its config through the proxy,
   one after the other, for ``--baseline`` seconds;
3. a dry run, then a real collection (POST /gc at the origin), with the same pulls going on; the
   pulls are split into those during the mark and those during the sweep by the report's times;
4. the herd's CPU seconds and peak RSS over each collection.

Run from the repository root: ``.venv/bin/python scripts/bench_gc.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import run_and_report
from netsim.cluster import QUIET, Cluster, pid_of
from netsim.cpu import process_seconds
from swarmreg.config import Address
from swarmreg.index.sqlite_store import SqliteIndexStore
from swarmreg.origin.client import OriginClient
from tests.proxy.helpers import digest_of, push_image

OLD = "2000-01-01T00:00:00.000Z"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def fake_digest(kind: str, n: int) -> str:
    return "sha256:" + hashlib.sha256(f"{kind} {n}".encode()).hexdigest()


async def build_index(data_dir: Path, manifests: int, layers: int, unreferenced: int) -> dict[str, int]:
    """The synthetic index and blob store; what the collector should find."""
    async with SqliteIndexStore(data_dir / "index.db", fsync=False):  # the real schema, created as the daemon does
        pass
    referenced = layers - unreferenced
    db = sqlite3.connect(data_dir / "index.db", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    manifest_rows, ref_rows = [], []
    links: dict[tuple[str, str], None] = {}
    for n in range(manifests):
        repository, digest = f"bench/repo{n % 1000}", fake_digest("manifest", n)
        manifest_rows.append((repository, digest, MANIFEST_TYPE, 100, "{}", OLD))
        for layer in (2 * n % referenced, (2 * n + 1) % referenced):
            ref_rows.append((repository, digest, fake_digest("layer", layer), "blob"))
            links[(repository, fake_digest("layer", layer))] = None
    stale = [(f"bench/repo{n % 1000}", fake_digest("layer", referenced + n)) for n in range(unreferenced // 2)]
    db.executemany("INSERT INTO manifests (repository, digest, media_type, size, annotations, created) "
                   "VALUES (?, ?, ?, ?, ?, ?)", manifest_rows)
    db.executemany("INSERT OR IGNORE INTO refs (repository, manifest, digest, kind) VALUES (?, ?, ?, ?)", ref_rows)
    db.executemany("INSERT OR IGNORE INTO blobs (repository, digest, size, linked) VALUES (?, ?, 0, ?)",
                   [(repository, digest, OLD) for repository, digest in [*links, *stale]])
    db.execute("COMMIT")
    db.close()
    old = time.time() - 2 * 86400
    blobs = data_dir / "blobs" / "sha256"
    for digest in [fake_digest("manifest", n) for n in range(manifests)] + \
            [fake_digest("layer", n) for n in range(layers)]:
        hex_ = digest[7:]
        shard = blobs / hex_[:2]
        shard.mkdir(parents=True, exist_ok=True)
        path = shard / hex_
        path.touch()
        os.utime(path, (old, old))
    return {"manifests": manifests, "layers": layers, "unreferenced": unreferenced,
            "stale_links": len(stale), "live": manifests + referenced}


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Pulls:
    """Pulls of a manifest and a small blob through the proxy, one after the other, timed."""

    def __init__(self, proxy: httpx.AsyncClient, manifest: str, blob: str) -> None:
        self.proxy, self.manifest, self.blob = proxy, manifest, blob
        self.samples: list[tuple[float, float]] = []  # (start, seconds)

    async def one(self) -> None:
        started = time.perf_counter()
        for path in (self.manifest, self.blob):
            response = await self.proxy.get(path)
            assert response.status_code == 200, response.text
        self.samples.append((started, time.perf_counter() - started))

    async def until(self, done: trio.Event) -> None:
        while not done.is_set():
            await self.one()


def latency(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"pulls": 0}
    ordered = sorted(samples)
    return {"pulls": len(samples), "median_ms": statistics.median(ordered) * 1000,
            "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000, "max_ms": ordered[-1] * 1000}


async def collection(origin: OriginClient, pulls: Pulls, pid: int, dry_run: bool) -> dict[str, Any]:
    """One collection with pulls going on; its report, the pulls in each phase, CPU and peak RSS."""
    done = trio.Event()
    peak = rss_kib(pid)
    first_pull = len(pulls.samples)
    cpu = process_seconds(pid)

    async def sample_rss() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pulls.until, done)
        nursery.start_soon(sample_rss)
        started = time.perf_counter()
        report = await origin.collect_garbage(dry_run=dry_run)
        done.set()
    marked_until = started + report["mark_seconds"]
    during = pulls.samples[first_pull:]
    return {"report": report, "herd_cpu_s": process_seconds(pid) - cpu, "herd_peak_rss_mib": peak / 1024,
            "pulls_mark": latency([s for t, s in during if t < marked_until]),
            "pulls_sweep": latency([s for t, s in during if t >= marked_until]),
            # The slowest pulls: when they started (seconds after the collection did) and how long they took.
            "slowest": [(round(t - started, 3), round(s * 1000, 1))
                        for t, s in sorted(during, key=lambda sample: -sample[1])[:5]]}


async def main(arguments: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gc-", dir=arguments.work) as work_dir:
        work = Path(work_dir)
        began = time.perf_counter()
        expected = await build_index(work / "herd", arguments.manifests, arguments.layers, arguments.unreferenced)
        built = time.perf_counter() - began
        cluster = Cluster(work, QUIET)
        herd = await cluster.herd("gc.grace=3600")
        pid = pid_of(herd)
        try:
            async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
                    OriginClient(Address.parse(herd.address("origin"))) as origin:
                digest, manifest = await push_image(proxy, "bench/pulled", "v1", [os.urandom(50_000)])
                config = json.loads(manifest)["config"]["digest"]
                pulls = Pulls(proxy, f"/v2/bench/pulled/manifests/{digest}", f"/v2/bench/pulled/blobs/{config}")
                # Warm: connections, caches, and the herd's start-up work (seeding what it holds reads
                # the store's 200,000 names): until two seconds of pulls had none slower than 100 ms.
                quiet_since = time.perf_counter()
                while time.perf_counter() - quiet_since < 2:
                    await pulls.one()
                    if pulls.samples[-1][1] > 0.1:
                        quiet_since = time.perf_counter()
                pulls.samples.clear()
                with trio.move_on_after(arguments.baseline):
                    await pulls.until(trio.Event())
                baseline = latency([s for _, s in pulls.samples])
                idle_rss = rss_kib(pid) / 1024
                dry = await collection(origin, pulls, pid, dry_run=True)
                real = await collection(origin, pulls, pid, dry_run=False)
                assert digest_of(manifest) == digest
                still = await proxy.get(f"/v2/bench/pulled/manifests/{digest}")
                assert still.status_code == 200
        finally:
            await cluster.stop()
            if arguments.log:
                print((work / "herd.log").read_text()[-3000:], file=sys.stderr)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "expected": expected, "build_seconds": built,
            "baseline": baseline, "herd_idle_rss_mib": idle_rss, "dry_run": dry, "real": real}


def report(outcome: dict[str, Any]) -> None:
    expected, base = outcome["expected"], outcome["baseline"]
    print(f"CPU: {outcome['cpu']} ({outcome['cores']} cores)")
    print(f"index: {expected['manifests']} manifests, {expected['layers']} layers "
          f"({expected['unreferenced']} unreferenced, {expected['stale_links']} of them with stale links); "
          f"{expected['manifests'] + expected['layers']} zero-length blob files; built in "
          f"{outcome['build_seconds']:.1f} s; herd idle RSS {outcome['herd_idle_rss_mib']:.0f} MiB")
    print(f"{'run':<9}{'marked':>8}{'links':>7}{'swept':>7}{'mark s':>8}{'sweep s':>9}{'herd cpu s':>11}"
          f"{'peak RSS MiB':>13}")
    for name in ("dry_run", "real"):
        run, rep = outcome[name], outcome[name]["report"]
        print(f"{name:<9}{rep['marked']:>8}{rep['links_removed']:>7}{rep['swept']:>7}{rep['mark_seconds']:>8.2f}"
              f"{rep['sweep_seconds']:>9.2f}{run['herd_cpu_s']:>11.1f}{run['herd_peak_rss_mib']:>13.0f}")
    print(f"{'pulls (manifest + blob via the proxy)':<40}{'pulls':>6}{'median ms':>10}{'p95 ms':>8}{'max ms':>8}"
          f"{'median/base':>12}")
    rows = [("without GC", base)] + [(f"{name} {phase[6:]}", outcome[name][phase])
                                      for name in ("dry_run", "real") for phase in ("pulls_mark", "pulls_sweep")]
    for label, pulls in rows:
        if not pulls["pulls"]:
            print(f"{label:<40}{0:>6}")
            continue
        print(f"{label:<40}{pulls['pulls']:>6}{pulls['median_ms']:>10.2f}{pulls['p95_ms']:>8.2f}{pulls['max_ms']:>8.0f}"
              f"{pulls['median_ms'] / base['median_ms']:>12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=100_000, help="layer blobs (the manifests' own are more)")
    parser.add_argument("--unreferenced", type=int, default=40_000, help="layers no manifest names")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of pulls without a collection")
    parser.add_argument("--work", help="the directory to make the herd's data directory in (default: the temp dir)")
    parser.add_argument("--log", action="store_true", help="print the end of the herd's log")
    parser.add_argument("--json", help="write every figure to this file")
    run_and_report(parser, main, report)
