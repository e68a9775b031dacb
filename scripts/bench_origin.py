#!/usr/bin/env python3
"""Benchmark the origin: chunked upload and streamed download of one large blob, against a file copy.

Run from the repository root with the project's virtual environment (httpx comes with the
test extra)::

    .venv/bin/python scripts/bench_origin.py [--size 256MiB] [--repeat 3] [--json out.json]

What it does (every figure is measured in the same run, on the same disk):

1. Writes a random file of ``--size`` bytes (and one 4x smaller) in a temp work dir,
   4 MiB at a time, hashing it on the way; then ``sync``.
2. Each repetition first runs the baselines: ``shutil.copyfile`` of each file to another
   file in the work dir (3 times), the same followed by fsync, a read-back in 4 MiB reads, and a
   read-back hashed with sha256 (what the benchmark client itself pays per byte).
   Nothing is dropped from the page cache: every read in this script, baseline or
   origin, is served from memory.
3. Then a fresh origin daemon (``swarmreg daemon --roles origin`` in a child process, with
   a fresh data dir, so the same digest can be uploaded again): Kraken's chunked upload by
   the project's OriginClient (POST, one PATCH ``Content-Range: start,end`` per 32 MiB,
   each body streamed from the file in 4 MiB reads, PUT ``?through=false``), the download
   streamed with httpx (hashed and verified) and with curl (into /dev/null), then the same
   for the small blob. Then another fresh daemon takes the upload with ``?through=true``, which also
   writes the blob to the filesystem backend.
4. While each transfer runs, a task samples the daemon's VmRSS every 20 ms; VmHWM is
   reset (``/proc/<pid>/clear_refs``) before each phase and read after it.
5. Prints a table of medians: seconds, MB/s (decimal, 1 MB = 1e6 bytes), throughput
   ratio against the plain file copy of the same size, the daemon's peak RSS and the CPU
   the daemon and the client used.

Two things keep the VM this runs on from showing up as noise. ``--warmup`` repetitions
(default 1) run first and are kept apart (in the JSON only). And before every timed
phase, copy or transfer, the script writes and unlinks a scratch file of twice the blob
size (``preheat()``; ``--no-preheat`` turns it off): this VM hands memory that stays free
for ~2 s back to its host (virtio-balloon free page reporting), and writing into such
memory again is ~10x slower (256 MiB into the page cache: 0.6 s instead of 0.05 s).
The plain copy reuses the pages its previous copy freed a moment ago; the origin, which
keeps each blob, would otherwise pay that cost, more or less of it from run to run.

This is a benchmark, not a test: it checks nothing but the digests it downloads.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpcore
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import run_and_report
from netsim.cluster import Cluster, pid_of
from netsim.cpu import machine_seconds, own_seconds, process_seconds
from netsim.images import make_blob
from netsim.memory import read_status, reset_hwm
from swarmreg.config import Address, parse_size
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginClient

KiB, MiB = 1 << 10, 1 << 20
MB = 1e6
PIECE = 4 * MiB  # baseline reads
PATCH = 32 * MiB  # what OriginClient.upload_file sends per PATCH (its CHUNK), for the table
SAMPLE_INTERVAL = 0.020
NAMESPACE = "bench"


def at_least(minimum: int, parse: Callable[[str], int] = int) -> Callable[[str], int]:
    """An argparse type: ``parse`` the text, refusing values below ``minimum``."""
    def convert(text: str) -> int:
        try:
            value = parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value
    return convert


def human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


# -- the data ---------------------------------------------------------------------------------

def preheat(workdir: Path, nbytes: int) -> None:
    """Write ``nbytes`` to a scratch file and unlink it, so that much memory is freshly freed.

    This VM gives memory that stayed free for about 2 s back to its host (virtio-balloon
    free page reporting); the next write into it faults every page in again: writing
    256 MiB into the page cache took 0.6 s then, 0.05 s into memory freed just before.
    The origin writes every uploaded byte into new page-cache pages, so without this the
    figures would measure the VM's memory reporting, differently from run to run.
    """
    if nbytes <= 0:
        return
    piece = bytes(PIECE)
    fd = os.open(workdir / "preheat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, nbytes, PIECE):
            os.pwrite(fd, piece, offset)
    finally:
        os.close(fd)
        os.unlink(workdir / "preheat")


# -- baselines (blocking, inside the trio run but with nothing else running) -----------------------

def time_copy(src: Path, dst: Path, *, fsync: bool) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    if fsync:
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def time_read(src: Path, *, hash_it: bool) -> float:
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    hasher = hashlib.sha256()
    start = time.perf_counter()
    with open(src, "rb", buffering=0) as file:
        while n := file.readinto(buffer):
            if hash_it:
                hasher.update(view[:n])
    return time.perf_counter() - start


# -- the daemon's /proc figures -------------------------------------------------------------------

def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    status = read_status(pid)
    return {"VmRSS": status["VmRSS"] * KiB, "VmHWM": status["VmHWM"] * KiB}


async def measure(pid: int, operation: Callable[[], Awaitable[Any]], *,
                  client: int = resource.RUSAGE_SELF) -> dict[str, Any]:
    """Run ``operation`` while sampling the daemon's RSS every 20 ms; its timings and peaks."""
    peak = 0
    samples = 0

    async def sample() -> None:
        nonlocal peak, samples
        while True:
            peak = max(peak, memory(pid)["VmRSS"])
            samples += 1
            await trio.sleep(SAMPLE_INTERVAL)

    hwm_reset = reset_hwm(pid)
    rss_before = memory(pid)["VmRSS"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        await trio.sleep(0)  # first sample before the transfer starts
        daemon_cpu, client_cpu, machine = process_seconds(pid), own_seconds(client), machine_seconds()
        start = time.perf_counter()
        result = await operation()
        seconds = time.perf_counter() - start
        daemon_cpu, client_cpu = process_seconds(pid) - daemon_cpu, own_seconds(client) - client_cpu
        busy, total, steal = (after - before for after, before in zip(machine_seconds(), machine, strict=True))
        nursery.cancel_scope.cancel()
    status = memory(pid)
    peak = max(peak, status["VmRSS"])
    return {"seconds": seconds, "rss_before": rss_before, "rss_peak_sampled": peak, "samples": samples,
            "vm_hwm": status["VmHWM"], "vm_hwm_reset": hwm_reset,
            "daemon_cpu_seconds": daemon_cpu, "client_cpu_seconds": client_cpu,
            "machine_busy_share": busy / total if total else None,
            "machine_steal_share": steal / total if total else None,
            # CPU (in cores) that neither the daemon nor the client used: other processes,
            # this script's own sampler when curl is the client, interrupts.
            "other_cpu_cores": (busy - daemon_cpu - client_cpu) / seconds if total else None,
            "result": result}


# -- the client side --------------------------------------------------------------------------

def digest(blob: dict[str, Any]) -> Digest:
    return Digest.parse(f"sha256:{blob['sha256']}")


def check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")


async def download_httpx(client: httpx.AsyncClient, blob_url: str, hexdigest: str, size: int) -> int:
    """GET the blob streamed, hash every piece, verify; returns how many pieces arrived."""
    hasher = hashlib.sha256()
    received = pieces = 0
    async with client.stream("GET", blob_url) as response:
        if response.status_code != 200:
            await response.aread()
            check(response, "GET blob")
        async for piece in response.aiter_raw():
            hasher.update(piece)
            received += len(piece)
            pieces += 1
    if received != size or hasher.hexdigest() != hexdigest:
        raise RuntimeError(f"download mismatch: {received} bytes, sha256 {hasher.hexdigest()}")
    return pieces


async def download_curl(curl: str, blob_url: str, size: int) -> float:
    """GET the blob with curl into /dev/null; returns curl's own speed_download (bytes/s)."""
    result = await trio.run_process(
        [curl, "-s", "-f", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", blob_url],
        capture_stdout=True)
    speed, received = result.stdout.decode().split()
    if int(received) != size:
        raise RuntimeError(f"curl received {received} bytes, expected {size}")
    return float(speed)


# -- one daemon ---------------------------------------------------------------------------------

class Origin:
    """An origin daemon in a child process, with a fresh data dir and its log in the work dir."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.cluster = Cluster(workdir, env={"PYTHONUNBUFFERED": "1"})
        self.process = self.cluster.add(name, ["origin"])
        self.data_dir = self.process.data_dir
        self.log_path = self.cluster.log_path(name)

    async def __aenter__(self) -> Origin:
        try:
            await self.process.start()
        except BaseException:
            self.cluster.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            status = (await self.cluster.stop())[self.process.name]
        if status != 0:
            print(f"warning: {self.process.name} exited with status {status}, see {self.log_path}",
                  file=sys.stderr)

    @property
    def pid(self) -> int:
        return pid_of(self.process)

    def uploader(self) -> OriginClient:
        """The project's origin client, for Kraken's chunked uploads to this daemon."""
        return OriginClient(Address.parse(self.process.address("origin")), timeout=300)

    def blob_url(self, hexdigest: str) -> str:
        return f"{self.process.url('origin')}/namespace/{NAMESPACE}/blobs/sha256:{hexdigest}"

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the run ------------------------------------------------------------------------------------

def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


COPIES = 3  # plain copies per repetition: the denominator of every ratio


def run_baselines(workdir: Path, blobs: dict[str, dict[str, Any]], heat: int,
                  record: Callable[[str, dict[str, Any]], None]) -> None:
    """The file baselines, blocking (nothing else runs meanwhile)."""
    os.sync()  # no writeback of earlier data during the copies
    for tag in ("big", "small"):
        src, dst = blobs[tag]["path"], workdir / f"copy-{tag}"
        for _ in range(COPIES):
            preheat(workdir, heat)
            record(f"file copy {tag}", {"seconds": time_copy(src, dst, fsync=False)})
    src, dst = blobs["big"]["path"], workdir / "copy-big"
    preheat(workdir, heat)
    record("file copy+fsync big", {"seconds": time_copy(src, dst, fsync=True)})
    record("file read big", {"seconds": time_read(src, hash_it=False)})
    record("file read+sha256 big", {"seconds": time_read(src, hash_it=True)})


async def run_all(args: argparse.Namespace, workdir: Path, blobs: dict[str, dict[str, Any]],
                  results: dict[str, list[dict[str, Any]]],
                  warmup: dict[str, list[dict[str, Any]]]) -> None:
    """Warm-up repetitions (recorded in ``warmup``), then the measured ones (in ``results``).

    Each repetition runs the file baselines, then a fresh origin for the uploads and
    downloads, then another fresh origin for the upload with through=true.
    """
    curl = shutil.which("curl")
    big, small = blobs["big"], blobs["small"]
    timeout = httpx.Timeout(300.0)
    # Enough fresh memory for the biggest phase: through=true writes the blob twice.
    heat = 2 * big["size"] + 64 * MiB if args.preheat else 0

    async def timed(pid: int, operation: Callable[[], Awaitable[Any]], **kwargs: Any) -> dict[str, Any]:
        preheat(workdir, heat)
        return await measure(pid, operation, **kwargs)

    for rep in range(-args.warmup, args.repeat):
        into = warmup if rep < 0 else results
        label = "warm-up" if rep < 0 else f"rep {rep}"
        suffix = f"warmup{-rep}" if rep < 0 else str(rep)

        def record(key: str, m: dict[str, Any], into: dict[str, Any] = into, label: str = label) -> None:
            into.setdefault(key, []).append(m)
            progress(f"  {label}: {key} {m['seconds']:.3f} s")

        run_baselines(workdir, blobs, heat, record)
        async with Origin(workdir, f"origin-{suffix}") as origin, origin.uploader() as uploader, \
                httpx.AsyncClient(timeout=timeout) as client:
            into.setdefault("daemon idle", []).append({"rss": memory(origin.pid)["VmRSS"]})
            for blob in (big, small):
                url, tag = origin.blob_url(blob["sha256"]), blob["tag"]
                record(f"upload through=false {tag}", await timed(origin.pid, partial(
                    uploader.upload_file, NAMESPACE, digest(blob), blob["path"], through=False)))
                record(f"download httpx {tag}", await timed(origin.pid, partial(
                    download_httpx, client, url, blob["sha256"], blob["size"])))
                if curl:
                    record(f"download curl {tag}", await timed(
                        origin.pid, partial(download_curl, curl, url, blob["size"]),
                        client=resource.RUSAGE_CHILDREN))
        if not args.keep:
            origin.remove_data()
        async with Origin(workdir, f"origin-through-{suffix}") as origin, origin.uploader() as uploader:
            record("upload through=true big", await timed(origin.pid, partial(
                uploader.upload_file, NAMESPACE, digest(big), big["path"], through=True)))
        if not args.keep:
            origin.remove_data()


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(results: dict[str, list[dict[str, Any]]], blobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per operation: medians of seconds, MB/s, ratio to the copy of the same size."""
    rows = []
    patches = f"({human(PATCH)} PATCHes)"
    order = [
        ("file copy big", "file copy (shutil.copyfile)", "big"),
        ("file copy+fsync big", "file copy + fsync", "big"),
        ("file read big", "file read (4 MiB reads)", "big"),
        ("file read+sha256 big", "file read + sha256", "big"),
        ("upload through=false big", f"origin upload, through=false {patches}", "big"),
        ("upload through=true big", f"origin upload, through=true {patches}", "big"),
        ("download httpx big", "origin download, httpx + sha256", "big"),
        ("download curl big", "origin download, curl", "big"),
        ("file copy small", "file copy (shutil.copyfile)", "small"),
        ("upload through=false small", f"origin upload, through=false {patches}", "small"),
        ("download httpx small", "origin download, httpx + sha256", "small"),
        ("download curl small", "origin download, curl", "small"),
    ]
    copy_rate = {tag: blobs[tag]["size"] / median([r["seconds"] for r in results[f"file copy {tag}"]])
                 for tag in ("big", "small")}
    for key, label, tag in order:
        runs = results.get(key)
        if not runs:
            continue
        size = blobs[tag]["size"]
        seconds = median([r["seconds"] for r in runs])
        rate = size / seconds
        row: dict[str, Any] = {
            "key": key, "operation": label, "size": size, "runs": len(runs),
            "seconds_median": seconds, "seconds_all": [r["seconds"] for r in runs],
            "mb_per_s": rate / MB, "ratio_vs_copy": rate / copy_rate[tag],
        }
        if "curl" in key:
            row["curl_speed_mb_per_s_median"] = median([r["result"] for r in runs]) / MB
        if "rss_peak_sampled" in runs[0]:
            row["daemon_rss_peak_max"] = max(r["rss_peak_sampled"] for r in runs)
            row["daemon_vm_hwm_max"] = max(r["vm_hwm"] for r in runs)
            row["daemon_rss_before_median"] = median([r["rss_before"] for r in runs])
            row["daemon_cpu_share_median"] = median([r["daemon_cpu_seconds"] / r["seconds"] for r in runs])
            row["client_cpu_share_median"] = median([r["client_cpu_seconds"] / r["seconds"] for r in runs])
            row["other_cpu_cores_median"] = median([r["other_cpu_cores"] for r in runs])
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], idle_rss: float, steal: list[float],
                others: list[float]) -> None:
    header = ("operation", "size", "median s", "MB/s", "vs copy", "daemon peak RSS",
              "daemon CPU", "client CPU", "others CPU")
    lines = []
    for row in rows:
        daemon = "daemon_rss_peak_max" in row
        lines.append((
            row["operation"], human(row["size"]), f"{row['seconds_median']:.3f}", f"{row['mb_per_s']:.0f}",
            f"{row['ratio_vs_copy']:.2f}x",
            f"{row['daemon_rss_peak_max'] / MiB:.0f} MiB (HWM {row['daemon_vm_hwm_max'] / MiB:.0f})"
            if daemon else "-",
            f"{row['daemon_cpu_share_median']:.0%}" if daemon else "-",
            f"{row['client_cpu_share_median']:.0%}" if daemon else "-",
            f"{max(row['other_cpu_cores_median'], 0.0):.0%}" if daemon else "-",
        ))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) + " |")
    print()
    print("MB/s in decimal megabytes (1 MB = 1e6 bytes); 'vs copy' = throughput / throughput of the")
    print("plain file copy of the same size in this run; seconds and ratios are medians over the runs.")
    print("Daemon peak RSS: highest VmRSS sampled every 20 ms over all runs (VmHWM, reset before each")
    print(f"phase, in brackets); the idle daemon's RSS was {idle_rss / MiB:.0f} MiB. CPU: CPU seconds / wall")
    print("seconds of the phase (100% = one of the cores); client = this process, or curl for curl rows;")
    print("others = the rest of the machine, from /proc/stat ticks (approximate, +-10% on short phases):")
    print("other people's processes on the same cores disturb the figures of the rows where it is high.")
    print("The page cache is not dropped: every read, baseline or origin, is served from memory;")
    print("the origin fsyncs each committed blob (store.fsync = true), the plain copy does not.")
    if steal:
        print(f"CPU steal (host contention) over the timed origin phases: median {median(steal):.1%}, "
              f"max {max(steal):.1%} of both cores.")
    if others:
        print(f"CPU used by other processes during the timed origin phases: median "
              f"{max(median(others), 0.0):.0%}, max {max(others):.0%} of one core.")
    for row in rows:
        if "curl_speed_mb_per_s_median" in row:
            print(f"curl's own speed_download, {human(row['size'])}: median "
                  f"{row['curl_speed_mb_per_s_median']:.0f} MB/s (the table times the curl process).")
    print("Before each timed phase a scratch file of twice the blob size is written and unlinked")
    print("(see preheat() and --no-preheat).")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the blobs, run every repetition; returns every figure (the JSON document)."""
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = args.httpx_read
    workdir = Path(tempfile.mkdtemp(prefix="swarmreg-bench-", dir=args.workdir))
    progress(f"work dir {workdir}")
    try:
        blobs: dict[str, dict[str, Any]] = {}
        for tag, size in (("big", args.size), ("small", args.size // 4)):
            path = workdir / f"blob-{tag}"
            start = time.perf_counter()
            digest = make_blob(path, size)  # blocking, with nothing else running yet
            blobs[tag] = {"tag": tag, "path": path, "size": size, "sha256": digest.removeprefix("sha256:")}
            progress(f"generated {human(size)} in {time.perf_counter() - start:.2f} s")

        # The generated files' dirty pages go to disk now, not during a measurement.
        os.sync()
        results: dict[str, list[dict[str, Any]]] = {}
        warmup: dict[str, list[dict[str, Any]]] = {}
        await run_all(args, workdir, blobs, results, warmup)
        return {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "args": {"size": args.size, "repeat": args.repeat, "warmup": args.warmup,
                     "preheat": args.preheat, "copies_per_repeat": COPIES, "chunk": PATCH,
                     "httpx_read": args.httpx_read, "workdir": str(workdir)},
            "units": {"sizes": "bytes", "rss": "bytes", "seconds": "wall seconds",
                      "mb_per_s": "1e6 bytes per second",
                      "ratio_vs_copy": "throughput / file copy throughput of the same size"},
            "blobs": {tag: {k: str(v) if isinstance(v, Path) else v for k, v in blob.items()}
                      for tag, blob in blobs.items()},
            "daemon_idle_rss_median": median([r["rss"] for r in results["daemon idle"]]),
            "rows": summarize(results, blobs),
            "runs": results,
            "warmup_runs": warmup,
        }
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(document: dict[str, Any]) -> None:
    """The run's header line and its table of medians."""
    args, results = document["args"], document["runs"]
    curl = "yes" if results.get("download curl big") else "not found"
    print(f"\nswarmreg origin benchmark, {document['date'][:10]}, {document['machine']['cpus']} cores, "
          f"loopback, blobs {human(args['size'])} and {human(args['size'] // 4)}, {args['repeat']} runs "
          f"after {args['warmup']} warm-up, PATCH {human(args['chunk'])}, httpx read {human(args['httpx_read'])}, "
          f"preheat {'on' if args['preheat'] else 'off'}, curl {curl}")
    steal = [r["machine_steal_share"] for runs in results.values() for r in runs
             if r.get("machine_steal_share") is not None]
    others = [r["other_cpu_cores"] for runs in results.values() for r in runs
              if r.get("other_cpu_cores") is not None]
    print_table(document["rows"], document["daemon_idle_rss_median"], steal, others)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=at_least(4, parse_size), default=256 * MiB, help="blob size (default 256MiB)")
    parser.add_argument("--repeat", type=at_least(1), default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--workdir", type=Path,
                        help="parent of the temp work dir (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data, daemon logs)")
    parser.add_argument("--warmup", type=at_least(0), default=1,
                        help="untimed repetitions first (default 1; see the module doc)")
    parser.add_argument("--no-preheat", dest="preheat", action="store_false",
                        help="do not free fresh memory before each timed phase (see preheat())")
    parser.add_argument("--httpx-read", type=at_least(1, parse_size), default=1 * MiB,
                        help="bytes httpcore asks the socket for per read (its default is 64KiB; "
                             "default here 1MiB, so the client spends less CPU per byte)")
    run_and_report(parser, main, report)
