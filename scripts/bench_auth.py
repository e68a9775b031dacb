#!/usr/bin/env python3
"""Benchmark what password guessing costs the daemon (issue 11, point 3).

One daemon (origin, index, proxy roles, in a child process) with one user. Phases, each timing
GET /health on the proxy port and on the origin port of the same daemon, one request after
another:

1. idle;
2. while 8 clients send wrong passwords to ``/v2/`` as fast as they can, with
   ``proxy.auth_failure_limit = 0`` (no throttle: every guess costs a scrypt);
3. the same with the default throttle (10 failures per 60 s per address: the guesses get 429);
4. ten clients that each start a 20 MB ``POST /token``, send up to 12 MiB of it and then stop
   without closing (token mode), for the daemon's RSS.

Every phase reports /health latency (median, p95), the daemon's CPU (cores), its VmRSS before and
after and VmHWM, and the guesses answered per second. Run from the repository root:
``.venv/bin/python scripts/bench_auth.py [--seconds 5] [--json out.json]``. It also runs against
an older tree (it reads ``proxy.auth_failure_limit`` only when that tree's config has it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import run_and_report
from netsim.cpu import machine_seconds, process_seconds
from netsim.memory import read_status
from swarmreg.config import ProxyConfig
from swarmreg.devcluster import DaemonProcess, port_zero
from swarmreg.registry.auth import hash_password

KiB, MiB = 1 << 10, 1 << 20
USER, PASSWORD = "alice", "alice-pw"
GUESSERS = 8
# An abandoned POST /token sends this much of its declared 20 MB (more than a body buffers).
ABANDONED_SENT = 12 * MiB
HAS_THROTTLE = "auth_failure_limit" in {field.name for field in attrs.fields(ProxyConfig)}


def rss(pid: int) -> dict[str, int]:
    status = read_status(pid)
    return {"rss": status["VmRSS"] * KiB, "hwm": status["VmHWM"] * KiB}


async def start(workdir: Path, name: str, auth: str, throttle: bool) -> DaemonProcess:
    config = workdir / f"{name}.toml"
    limit = "" if not HAS_THROTTLE or throttle else "auth_failure_limit = 0\n"
    config.write_text(f'[proxy]\nauth = "{auth}"\n{limit}\n[proxy.users]\n{USER} = "{hash_password(PASSWORD)}"\n')
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (the daemon writes it until it stops)
    daemon = DaemonProcess(name, ["origin", "index", "proxy"], workdir / name, config_file=config,
                           overrides=[*port_zero(), "shutdown_timeout=5"], stderr=log,
                           env={"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    await daemon.start()
    return daemon


async def latencies(url: str, seconds: float) -> list[float]:
    """GET ``url`` one request after another for ``seconds``; each request's latency."""
    times: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.get(url)
            assert response.status_code == 200, response.text
            times.append(time.perf_counter() - started)
            await trio.sleep(0.005)
    return times


async def phase(daemon: DaemonProcess, seconds: float, load: str) -> dict[str, Any]:
    """/health latencies on both ports while ``load`` runs ("none", "guess", "abandoned")."""
    pid = daemon.process.pid if daemon.process else 0
    answers: dict[int, int] = {}
    proxy = daemon.url("proxy")

    async def guess(n: int) -> None:
        async with httpx.AsyncClient(base_url=proxy, timeout=60) as guesser:
            count = 0
            while True:
                response = await guesser.get("/v2/", auth=(USER, f"wrong-{n}-{count}"))
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                count += 1

    async def abandon() -> None:
        host, port = daemon.address("proxy").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        head = (f"POST /token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {20 * 1000 * 1000}\r\n\r\n").encode()
        try:
            await stream.send_all(head)
            for _ in range(ABANDONED_SENT // (64 * KiB)):  # blocks once the daemon stops reading
                await stream.send_all(b"a" * (64 * KiB))
            await trio.sleep_forever()  # abandoned: never sends the rest, never closes
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            answers[0] = answers.get(0, 0) + 1  # the daemon closed it
        finally:
            await stream.aclose()

    before = rss(pid)
    async with trio.open_nursery() as nursery:
        if load == "guess":
            for n in range(GUESSERS):
                nursery.start_soon(guess, n)
        elif load == "abandoned":
            for _ in range(10):
                nursery.start_soon(abandon)
        await trio.sleep(0.5)  # the load gets going
        cpu, machine, started = process_seconds(pid), machine_seconds(), time.perf_counter()
        answered_before = sum(answers.values())
        proxy_times: list[float] = []
        origin_times: list[float] = []
        async with trio.open_nursery() as probes:
            async def probe(url: str, into: list[float]) -> None:
                into.extend(await latencies(url, seconds))
            probes.start_soon(probe, f"{proxy}/health", proxy_times)
            probes.start_soon(probe, f"{daemon.url('origin')}/health", origin_times)
        wall = time.perf_counter() - started
        cpu = process_seconds(pid) - cpu
        busy, total, _ = (after - first for after, first in zip(machine_seconds(), machine, strict=True))
        guesses = sum(answers.values()) - answered_before
        nursery.cancel_scope.cancel()
    after = rss(pid)

    def summary(times: list[float]) -> dict[str, float]:
        ordered = sorted(times)
        return {"median_ms": statistics.median(ordered) * 1000,
                "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000, "count": len(ordered)}

    return {"load": load, "seconds": wall, "proxy_health": summary(proxy_times),
            "origin_health": summary(origin_times), "daemon_cpu_cores": cpu / wall,
            "machine_busy_cores": busy / total * (os.cpu_count() or 1) if total else None,
            "answers_per_s": guesses / wall, "answers": answers, "rss_before": before["rss"],
            "rss_after": after["rss"], "hwm": after["hwm"]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="swarmreg-bench-auth-", dir=args.workdir))
    results: dict[str, Any] = {"throttle_supported": HAS_THROTTLE, "guessers": GUESSERS, "phases": []}
    for name, auth, throttle, loads in (("basic", "basic", False, ("none", "guess")),
                                        ("throttled", "basic", True, ("guess",)),
                                        ("token", "token", True, ("abandoned",))):
        if name == "throttled" and not HAS_THROTTLE:
            continue
        daemon = await start(workdir, name, auth, throttle)
        try:
            for load in loads:
                outcome = await phase(daemon, args.seconds, load)
                results["phases"].append({"daemon": name, **outcome})
                print(f"{name:9} {load:9} proxy /health {outcome['proxy_health']['median_ms']:.1f} ms", file=sys.stderr)
            if name == "token":  # RSS once the abandoned posts are gone
                await trio.sleep(1)
                results["token_rss_after_close"] = rss(daemon.process.pid if daemon.process else 0)["rss"]
        finally:
            await daemon.stop()
    return results


def report(results: dict[str, Any]) -> None:
    print(f"\nauth benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {GUESSERS} guessers, "
          f"throttle {'supported' if results['throttle_supported'] else 'absent (old tree)'}\n")
    print("| daemon | load | proxy /health median (p95) | origin /health median (p95) | answers/s | "
          "daemon CPU | RSS before -> after (HWM) |")
    print("|---|---|---|---|---|---|---|")
    for row in results["phases"]:
        proxy, origin = row["proxy_health"], row["origin_health"]
        codes = ", ".join(f"{code or 'closed'}: {count}" for code, count in sorted(row["answers"].items()))
        print(f"| {row['daemon']} | {row['load']} | {proxy['median_ms']:.1f} ms ({proxy['p95_ms']:.1f}) | "
              f"{origin['median_ms']:.1f} ms ({origin['p95_ms']:.1f}) | {row['answers_per_s']:.0f} ({codes or '-'}) | "
              f"{row['daemon_cpu_cores'] * 100:.0f}% | {row['rss_before'] / MiB:.0f} -> "
              f"{row['rss_after'] / MiB:.0f} MiB ({row['hwm'] / MiB:.0f}) |")
    if "token_rss_after_close" in results:
        print(f"\ntoken daemon RSS after the abandoned posts: {results['token_rss_after_close'] / MiB:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each phase probes /health")
    parser.add_argument("--workdir", default=None, help="where the daemons' data and logs go (a temp dir)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    run_and_report(parser, main, report)
