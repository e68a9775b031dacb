#!/usr/bin/env python3
"""Benchmark pull-through caching: skopeo through the swarm's agents against skopeo straight from
the upstream, Debian's docker-registry, in the same run.

The upstream is a fresh docker-registry on loopback; the herd (origin, tracker, index, proxy)
names it in ``[[registries]]`` and as ``default_registry``, and so do the agents, as
``scripts/devcluster --upstream`` sets them. skopeo reaches an agent through a ``registries.conf``
mirror entry for the upstream (the image keeps its name, ``<upstream>/bench/image:<tag>``); the
direct pulls use the same file without the mirror. Every copy goes to ``dir:`` with a fresh
blob-info cache. Each repetition pushes a new image (a 256 MiB random layer and a 64 KiB one)
with skopeo into the upstream, so every swarm pull is cold at the herd too:

1. one agent: a cold pull through it (the herd resolves the tag and fetches every blob from the
   upstream, the agent gets them through the swarm), a warm pull through the same agent, and a
   direct pull; the order of the direct and the swarm pulls alternates between repetitions;
2. eight fresh agents: eight skopeo copies at once, each through its own agent, of one cold
   image, and eight skopeo copies at once straight from the upstream: the p50 and max time of
   the eight, and the bytes the upstream served for blob GETs (its access log) over the image's
   size.

For each phase: the CPU seconds (user + system, /proc/<pid>/stat) of the herd, the agents,
docker-registry and skopeo (the children this script waited for), and the peak RSS (VmHWM) of the
herd and the agents. The cold pulls' timeline comes from the daemons' info-level logs: when the
index resolved the tag, the origin's metainfo request for the layer (the fetch from the upstream,
its start and end), the layer seeded, the agent's layer GET and its download finished.

Run from the repository root (skopeo and docker-registry come from Debian):
``.venv/bin/python scripts/bench_pull_through.py [--repeat 5] [--concurrent-repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import run_and_report
from bench_origin_fetch import registry_pid
from netsim.cluster import Cluster
from netsim.cpu import process_seconds
from netsim.memory import read_status
from swarmreg.config import parse_size
from swarmreg.devcluster import DaemonProcess
from tests.clients.clients import containers_env
from tests.clients.layout import Image, build_oci_layout
from tests.clients.tools import run
from tests.upstream.registries import docker_registry

REPO = "bench/image"
# Info level, so each cold pull's timeline can be read from the logs (a few lines per blob).
SETTINGS = ("store.fsync=false", 'log.level="info"')
# docker-registry's access log (combined format): "GET /v2/<repo>/blobs/<digest> HTTP/1.1" <status> <bytes>
BLOB_GET = re.compile(r'"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP/1\.1" (\d{3}) (\d+) "[^"]*" "([^"]*)"')


def cpu_model() -> dict[str, Any]:
    """The CPU's model name and whether it has the SHA extensions (sha_ni)."""
    model, flags = "unknown", ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value
    return {"model": model, "sha_ni": "sha_ni" in flags.split(), "cores": os.cpu_count()}


def load_average() -> float:
    return os.getloadavg()[0]


class UpstreamLog:
    """docker-registry's access log, read a phase at a time."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def skip(self) -> None:
        """Forget everything logged so far."""
        self.offset = self.path.stat().st_size

    def blob_gets(self) -> list[tuple[str, int, int, str]]:
        """(digest, status, bytes, user agent) of each blob GET logged since the last call."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        self.offset += len(text.encode())
        return [(digest, int(status), int(size), agent) for digest, status, size, agent in BLOB_GET.findall(text)]


def mirror_served(gets: list[tuple[str, int, int, str]]) -> list[tuple[str, int, int, str]]:
    """``gets``, checked: skopeo read no blob from the upstream itself (a mirror that fails makes
    it fall back to the upstream without a word), and no blob was read twice."""
    assert not [get for get in gets if "skopeo" in get[3]], gets
    digests = [get[0] for get in gets if get[1] in (200, 206)]
    assert len(digests) == len(set(digests)), gets
    return gets


def served(gets: Sequence[tuple[str, int, int, str]]) -> int:
    """Bytes of blob content the upstream answered with (200 and 206)."""
    return sum(size for _, status, size, _ in gets if status in (200, 206))


class Meter:
    """CPU seconds of the daemons and of skopeo over one phase, and its wall time."""

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        self.groups = groups

    def __enter__(self) -> Meter:
        self.before = {name: sum(process_seconds(pid) for pid in pids) for name, pids in self.groups.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children_before = usage.ru_utime + usage.ru_stime
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu = {name: sum(process_seconds(pid) for pid in pids) - self.before[name]
                    for name, pids in self.groups.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # skopeo is the only child waited for inside a phase (the daemons run on)
        self.cpu["skopeo"] = usage.ru_utime + usage.ru_stime - self.children_before


def pid(process: DaemonProcess) -> int:
    assert process.process is not None
    return process.process.pid


def peak_rss_mib(process: DaemonProcess) -> float:
    return read_status(pid(process)).get("VmHWM", 0) / 1024


class Bench:
    def __init__(self, work: Path, upstream: str, registry_pid: int, layer: int) -> None:
        self.work, self.upstream, self.registry_pid, self.layer = work, upstream, registry_pid, layer
        self.log = UpstreamLog(work / "docker-registry.log")
        self.copies = 0
        self.skopeo = shutil.which("skopeo") or "skopeo"
        self.direct_conf = work / "direct.conf"
        self.direct_conf.write_text(f'[[registry]]\nlocation = "{upstream}"\ninsecure = true\n')

    def mirror_conf(self, agent: DaemonProcess) -> Path:
        """A registries.conf whose mirror for the upstream is ``agent``'s registry port."""
        conf = self.work / f"mirror-{agent.name}.conf"
        conf.write_text(f'[[registry]]\nlocation = "{self.upstream}"\ninsecure = true\n'
                        f'[[registry.mirror]]\nlocation = "{agent.address("agent", "registry")}"\ninsecure = true\n')
        return conf

    async def new_image(self, seed: int) -> tuple[Image, str]:
        """A new random image pushed into the upstream with skopeo; (image, its tag)."""
        layout = self.work / f"layout-{seed}"
        image = await trio.to_thread.run_sync(partial(build_oci_layout, layout, [self.layer, 64 << 10], seed=seed))
        tag = f"s{seed}"
        env = containers_env(self.work / "homes" / f"push-{seed}")
        await run([self.skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:latest",
                   f"docker://{self.upstream}/{REPO}:{tag}"], env=env)
        shutil.rmtree(layout)
        return image, tag

    async def copy(self, conf: Path, tag: str, image: Image) -> float:
        """Seconds skopeo takes to copy ``<upstream>/bench/image:<tag>`` into ``dir:`` with the
        registries.conf ``conf`` and a fresh blob-info cache; checks it got every layer."""
        self.copies += 1
        home = self.work / "homes" / f"copy-{self.copies}"
        out = self.work / "out" / f"copy-{self.copies}"
        out.parent.mkdir(parents=True, exist_ok=True)
        env = containers_env(home)
        started = time.perf_counter()
        await run([self.skopeo, "--insecure-policy", "--registries-conf", str(conf), "copy", "--src-tls-verify=false",
                   f"docker://{self.upstream}/{REPO}:{tag}", f"dir:{out}"], env=env)
        seconds = time.perf_counter() - started
        got = set(os.listdir(out))
        for layer in image.layers:
            assert layer.digest.partition(":")[2] in got, (layer.digest, got)
        shutil.rmtree(out)
        shutil.rmtree(home)
        return seconds

    def meter(self, herd: DaemonProcess, agents: Sequence[DaemonProcess]) -> Meter:
        return Meter({"herd": [pid(herd)], "agents": [pid(a) for a in agents], "docker_registry": [self.registry_pid]})


def phase(meter: Meter, gets: Sequence[tuple[str, int, int, str]], **extra: Any) -> dict[str, Any]:
    return {"seconds": meter.seconds, "cpu_s": meter.cpu, "upstream_blob_bytes": served(gets),
            "upstream_blob_gets": len([g for g in gets if g[1] in (200, 206)]), **extra}


async def direct_pull(bench: Bench, herd: DaemonProcess, agent: DaemonProcess, image: Image,
                      tag: str) -> dict[str, Any]:
    """One skopeo copy straight from the upstream."""
    bench.log.skip()
    with bench.meter(herd, [agent]) as meter:
        await bench.copy(bench.direct_conf, tag, image)
    return phase(meter, bench.log.blob_gets())


async def sample_cpu(samples: list[tuple[float, float, float]], herd: int, agent: int) -> None:
    """(time, herd CPU, agent CPU) every 50 ms, until cancelled."""
    while True:
        samples.append((time.time(), process_seconds(herd), process_seconds(agent)))
        await trio.sleep(0.05)


def split_cpu(samples: list[tuple[float, float, float]], started: float, seeded: float | None) -> dict[str, Any]:
    """The herd's and the agent's CPU seconds before the layer was seeded (the origin's fetch
    from the upstream) and after it (the swarm's transfer to the agent, the agent's stream)."""
    if seeded is None or len(samples) < 2:
        return {}
    at = started + seeded
    cut = min(samples, key=lambda sample: abs(sample[0] - at))
    return {"until_seeded": {"herd": cut[1] - samples[0][1], "agent": cut[2] - samples[0][2]},
            "after_seeded": {"herd": samples[-1][1] - cut[1], "agent": samples[-1][2] - cut[2]}}


async def swarm_pulls(bench: Bench, cluster: Cluster, herd: DaemonProcess, agent: DaemonProcess, conf: Path,
                      image: Image, tag: str) -> dict[str, Any]:
    """A cold skopeo copy through ``agent`` (with its timeline), then a warm one."""
    bench.log.skip()
    started = time.time()
    samples: list[tuple[float, float, float]] = []
    with bench.meter(herd, [agent]) as meter:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_cpu, samples, pid(herd), pid(agent))
            await bench.copy(conf, tag, image)
            nursery.cancel_scope.cancel()
    events = timeline(cluster, herd, agent, image, tag, started)
    cold = phase(meter, mirror_served(bench.log.blob_gets()), timeline=events,
                 cpu_split=split_cpu(samples, started, events["origin_layer_fetched_and_seeded"]))
    with bench.meter(herd, [agent]) as meter:
        await bench.copy(conf, tag, image)
    return {"cold": cold, "warm": phase(meter, bench.log.blob_gets())}


async def single(bench: Bench, cluster: Cluster, herd: DaemonProcess, repeat: int) -> dict[str, Any]:
    """Point 1: cold and warm through one agent, and direct, ``repeat`` times."""
    agent = await cluster.agent(herd, "agent", f'default_registry="{bench.upstream}"')
    conf = bench.mirror_conf(agent)
    runs = []
    for rep in range(repeat):
        image, tag = await bench.new_image(rep)
        size = image.config.size + sum(layer.size for layer in image.layers)
        row: dict[str, Any] = {"tag": tag, "image_bytes": size, "load": load_average()}
        for step in (("direct", "swarm") if rep % 2 == 0 else ("swarm", "direct")):
            if step == "direct":
                row["direct"] = await direct_pull(bench, herd, agent, image, tag)
            else:
                row.update(await swarm_pulls(bench, cluster, herd, agent, conf, image, tag))
        runs.append(row)
        print(f"single {rep}: cold {row['cold']['seconds']:.2f} s, warm {row['warm']['seconds']:.2f} s, "
              f"direct {row['direct']['seconds']:.2f} s, load {row['load']:.2f}", file=sys.stderr)
    return {"runs": runs, "peak_rss_mib": {"herd": peak_rss_mib(herd), "agent": peak_rss_mib(agent)}}


async def concurrent(bench: Bench, herd: DaemonProcess, clients: int, repeat: int) -> dict[str, Any]:
    """Point 2: ``clients`` fresh agents pulling one cold image at once, against ``clients``
    direct copies at once, ``repeat`` times."""
    runs = []
    for rep in range(repeat):
        image, tag = await bench.new_image(1000 + rep)
        size = image.config.size + sum(layer.size for layer in image.layers)
        group = Cluster(bench.work / f"agents-{rep}", SETTINGS)
        agents = [await group.agent(herd, f"c{rep}-{n}", f'default_registry="{bench.upstream}"')
                  for n in range(clients)]
        confs = [bench.mirror_conf(agent) for agent in agents]
        row: dict[str, Any] = {"tag": tag, "image_bytes": size, "load": load_average()}

        async def at_once(label: str, conf_list: list[Path], row: dict[str, Any] = row, tag: str = tag,
                          image: Image = image, agents: list[DaemonProcess] = agents) -> None:
            times: list[float] = []

            async def one(conf: Path) -> None:
                times.append(await bench.copy(conf, tag, image))

            bench.log.skip()
            with bench.meter(herd, agents) as meter:
                async with trio.open_nursery() as nursery:
                    for conf in conf_list:
                        nursery.start_soon(one, conf)
            gets = bench.log.blob_gets()
            row[label] = phase(meter, mirror_served(gets) if label == "swarm" else gets, times=sorted(times),
                               p50=statistics.median(times), max=max(times))

        steps = [("swarm", confs), ("direct", [bench.direct_conf] * clients)]
        for label, conf_list in (steps if rep % 2 == 0 else steps[::-1]):
            await at_once(label, conf_list)
        row["peak_rss_mib"] = {"herd": peak_rss_mib(herd), "agents_max": max(peak_rss_mib(a) for a in agents)}
        await group.stop(at_once=True)
        shutil.rmtree(group.work, ignore_errors=True)
        runs.append(row)
        print(f"concurrent {rep}: swarm p50 {row['swarm']['p50']:.2f} s max {row['swarm']['max']:.2f} s "
              f"({row['swarm']['upstream_blob_bytes'] / size:.2f}x), direct p50 {row['direct']['p50']:.2f} s "
              f"max {row['direct']['max']:.2f} s ({row['direct']['upstream_blob_bytes'] / size:.2f}x)",
              file=sys.stderr)
    return {"clients": clients, "runs": runs}


async def traced(bench: Bench, cluster: Cluster, herd: DaemonProcess) -> dict[str, Any]:
    """One more cold pull, not in the medians, through a new agent logging at debug level (its
    first verified piece is a debug line): its timeline."""
    agent = await cluster.agent(herd, "agent-debug", f'default_registry="{bench.upstream}"', 'log.level="debug"')
    image, tag = await bench.new_image(2000)
    started = time.time()
    seconds = await bench.copy(bench.mirror_conf(agent), tag, image)
    return {"seconds": seconds, "timeline": timeline(cluster, herd, agent, image, tag, started)}


# -- the cold pull's timeline, from the logs ------------------------------------------------------

LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")


def log_lines(path: Path, since: float) -> list[tuple[float, str]]:
    """(epoch seconds, line) of each line of a daemon log written at or after ``since`` (the log's
    times are local wall-clock times of day, without a date)."""
    day = datetime.fromtimestamp(since).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if match := LINE.match(line):
            h, m, s, ms = (int(g) for g in match.groups())
            at = day + h * 3600 + m * 60 + s + ms / 1000
            if at >= since - 0.001:
                lines.append((at, line))
    return lines


def access(lines: list[tuple[float, str]], pattern: str) -> tuple[float, float] | None:
    """(start, end) of the first access-log line matching ``pattern`` (hypercorn logs a request
    when it ends, with its duration in microseconds)."""
    for at, line in lines:
        if re.search(pattern, line) and (duration := re.search(r" (\d+)us$", line)):
            return at - int(duration.group(1)) / 1e6, at
    return None


def first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    return next((at for at, line in lines if re.search(pattern, line)), None)


def timeline(cluster: Cluster, herd: DaemonProcess, agent: DaemonProcess, image: Image, tag: str,
             started: float) -> dict[str, float | None]:
    """Seconds after skopeo started at which each step of the cold pull happened (None: not logged)."""
    herd_lines = log_lines(cluster.log_path(herd.name), started)
    agent_lines = log_lines(cluster.log_path(agent.name), started)
    layer = image.layers[0].digest
    events: dict[str, float | None] = {}
    manifest = access(agent_lines, rf'"GET /v2/{REPO}/manifests/{tag} ')
    events["agent_manifest_request_start"], events["agent_manifest_request_end"] = manifest or (None, None)
    events["index_resolved_tag"] = first(herd_lines, rf"resolved \S+/{REPO}:{tag} at ")
    fetch = access(herd_lines, rf"/blobs/{layer}/metainfo")
    events["origin_layer_metainfo_request_start"], events["origin_layer_metainfo_request_end"] = fetch or (None, None)
    events["origin_layer_fetched_and_seeded"] = first(herd_lines, rf"fetched {layer} ")
    blob = access(agent_lines, rf'"GET /v2/{REPO}/blobs/{layer}')
    events["agent_layer_request_start"], events["agent_layer_request_end"] = blob or (None, None)
    events["agent_first_piece"] = first(agent_lines, rf"{layer}: first piece verified")
    events["agent_layer_downloaded"] = first(agent_lines, rf"downloaded {layer} ")
    return {key: None if at is None else round(at - started, 3) for key, at in events.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="swarmreg-bench-pull-through-", dir=args.workdir))
    load_before = os.getloadavg()
    try:
        with docker_registry(work) as port:
            upstream = f"127.0.0.1:{port}"
            upstream_pid = registry_pid(port)
            assert upstream_pid is not None, "cannot find docker-registry's pid"
            bench = Bench(work, upstream, upstream_pid, parse_size(args.layer))
            cluster = Cluster(work / "cluster", SETTINGS)
            try:
                herd = await cluster.herd(f'registries=[{{name = "{upstream}", scheme = "http"}}]',
                                          f'default_registry="{upstream}"')
                one = await single(bench, cluster, herd, args.repeat)
                many = await concurrent(bench, herd, args.clients, args.concurrent_repeat)
                trace = await traced(bench, cluster, herd)
                herd_peak = peak_rss_mib(herd)
            finally:
                await cluster.stop()
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        return {"layer": bench.layer, "repeat": args.repeat, "concurrent_repeat": args.concurrent_repeat,
                "commit": commit, "cpu": cpu_model(), "load_before": load_before, "load_after": os.getloadavg(),
                "single": one, "concurrent": many, "traced": trace, "herd_peak_rss_mib": herd_peak}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    med = statistics.median
    single, many = results["single"]["runs"], results["concurrent"]["runs"]
    cpu, n = results["cpu"], results["concurrent"]["clients"]
    print(f"\npull-through benchmark, {time.strftime('%Y-%m-%d')}, commit {results['commit']}, {cpu['model']} "
          f"({'sha_ni' if cpu['sha_ni'] else 'no sha_ni'}), {cpu['cores']} cores, loopback, "
          f"image = {results['layer'] >> 20} MiB + 64 KiB layers, load average "
          f"{results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after\n")
    direct = med(r["direct"]["seconds"] for r in single)
    print(f"medians of {len(single)} (one agent) and {len(many)} ({n} at once)\n")
    print("| measurement | through the swarm | direct from docker-registry | ratio |")
    print("|---|---|---|---|")
    for key, what in (("cold", "skopeo pull, cold (herd and agent)"), ("warm", "skopeo pull, warm agent")):
        swarm = med(r[key]["seconds"] for r in single)
        print(f"| {what} | {swarm:.2f} s | {direct:.2f} s | {swarm / direct:.2f}x |")
    for key, what in (("p50", "p50"), ("max", "max")):
        swarm, straight = med(r["swarm"][key] for r in many), med(r["direct"][key] for r in many)
        print(f"| {n} skopeo pulls at once, {what} | {swarm:.2f} s | {straight:.2f} s | {swarm / straight:.2f}x |")
    upstream = {label: med(r[label]["upstream_blob_bytes"] / r["image_bytes"] for r in many)
                for label in ("swarm", "direct")}
    print(f"| {n} at once: upstream blob bytes / image size | {upstream['swarm']:.2f}x | {upstream['direct']:.2f}x "
          f"| |")
    print("\nCPU seconds per phase (medians): herd, agents, docker-registry, skopeo\n")
    print("| phase | wall | herd | agents | docker-registry | skopeo |")
    print("|---|---|---|---|---|---|")
    rows = [(f"one agent, {k}", [r[k] for r in single]) for k in ("cold", "warm", "direct")]
    rows += [(f"{n} at once, {k}", [r[k] for r in many]) for k in ("swarm", "direct")]
    for what, phases in rows:
        cells = [med(p["cpu_s"][who] for p in phases) for who in ("herd", "agents", "docker_registry", "skopeo")]
        print(f"| {what} | {med(p['seconds'] for p in phases):.2f} s | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print(f"\npeak RSS: herd {results['herd_peak_rss_mib']:.0f} MiB, the single agent "
          f"{results['single']['peak_rss_mib']['agent']:.0f} MiB, the concurrent agents up to "
          f"{max(r['peak_rss_mib']['agents_max'] for r in many):.0f} MiB each")
    splits = [r["cold"]["cpu_split"] for r in single if r["cold"].get("cpu_split")]
    if splits:
        print("\ncold pull, CPU seconds before and after the layer was seeded (medians, sampled every 50 ms): "
              + ", ".join(f"{who} {when.replace('_', ' ')} {med(s[when][who] for s in splits):.2f}"
                          for when in ("until_seeded", "after_seeded") for who in ("herd", "agent")))
    print("\ncold pull timeline, seconds after skopeo started (medians):\n")
    keys = list(single[0]["cold"]["timeline"])
    for key in keys:
        values = [r["cold"]["timeline"][key] for r in single if r["cold"]["timeline"][key] is not None]
        print(f"- {key}: {med(values):.3f}" if values else f"- {key}: not logged")
    trace = results["traced"]
    print(f"\none more cold pull through an agent logging at debug level ({trace['seconds']:.2f} s), "
          "seconds after skopeo started:\n")
    for key, at in trace["timeline"].items():
        print(f"- {key}: {'not logged' if at is None else f'{at:.3f}'}")
    print("\nruns: cold " + ", ".join(f"{r['cold']['seconds']:.2f}" for r in single)
          + "; warm " + ", ".join(f"{r['warm']['seconds']:.2f}" for r in single)
          + "; direct " + ", ".join(f"{r['direct']['seconds']:.2f}" for r in single))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="256MiB")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions with one agent")
    parser.add_argument("--concurrent-repeat", type=int, default=3, help="repetitions with --clients agents")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    run_and_report(parser, main, report)
