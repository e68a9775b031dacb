"""The registry load test: docker-style pulls through one agent and pushes to the proxy, for minutes.

``python -m netsim.load [--duration 600] [--pullers 16] [--pushers 2] [--layers 5] [--json out.json]``

A herd (origin, tracker, index, proxy) and one agent run as ``swarmreg daemon`` child processes.
A multi-layer image is pushed to the proxy; then, for ``--duration`` seconds:

- each puller does what ``docker pull`` does against the agent's registry port: ``GET /v2/``, HEAD
  the manifest by tag, GET it by the digest the HEAD gave (as containerd's resolver does), then
  the config and the layers (up to three at once, docker's default), each streamed in 1 MiB
  pieces, hashed and checked against its digest;
- each pusher does what ``docker push`` does against the proxy, every time with a new repository:
  HEAD each blob, a cross-repository mount of the base layer, chunked uploads (POST, PATCH with
  Content-Range, PUT ?digest=) of fresh random layers and the config, then PUT of the manifest;
  every ``--fresh-every``-th pull is of one of these new images, so some pulls go cold through
  the swarm;
- a sampler reads each daemon's RSS and CPU time from /proc every half second.

Every request is timed and checked (status, digests, sizes); one that raises or is answered
unexpectedly is a failed request, counted with its reason. The report gives requests per second
and latency percentiles per kind of request, bytes pulled, pulls and pushes completed, failures,
the daemons' peak RSS, and each daemon's RSS and CPU at the end of every minute of the run; the
exit status is 1 if any request failed. With ``--tracemalloc`` each daemon's Python heap is
snapshot every minute (``netsim.traced``) and the report names what grew on it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from netsim.cluster import QUIET, Cluster
from netsim.daemon_logs import LogFindings
from netsim.images import Image, config_blob, layer_sizes, random_blob
from netsim.load_report import summarize, table
from netsim.memory import MemorySampler, heap_growth
from netsim.registry_client import Recorder, RequestFailed, pull_image, push_image, push_new_image
from swarmreg.config import parse_size
from swarmreg.devcluster import DaemonProcess
from swarmreg.oci.mediatypes import DOCKER_CONFIG, DOCKER_LAYER_GZIP

KiB, MiB = 1 << 10, 1 << 20
REPOSITORY, TAG = "load/app", "v1"
RECENT = 8  # freshly pushed images the pullers choose from


@attrs.frozen
class Options:
    """What to run: the load's shape and the image's."""

    duration: float = 600.0
    pullers: int = 16
    pushers: int = 2
    layers: int = 5
    min_layer: int = 1 * KiB
    max_layer: int = 32 * MiB
    push_layer_min: int = 64 * KiB
    push_layer_max: int = 2 * MiB  # above tracker.inline_max (1 MiB): some pushed layers go as torrents
    push_chunk: int = 256 * KiB
    fresh_every: int = 4  # every n-th pull of a puller is of a freshly pushed image (0: never)
    timeout: float = 120.0
    settings: tuple[str, ...] = ()  # extra ``--set`` overrides for both daemons
    tracemalloc: bool = False  # run the daemons under netsim.traced: heap snapshots every minute


async def puller(registry: str, recorder: Recorder, main: Image, recent: list[Image], options: Options,
                 deadline: float) -> None:
    """Pull loop on the agent's registry port until the deadline (an iteration in flight finishes)."""
    rng = random.Random()
    async with httpx.AsyncClient(base_url=registry, timeout=options.timeout) as client:
        n = 0
        while trio.current_time() < deadline:
            n += 1
            fresh = bool(options.fresh_every and recent and n % options.fresh_every == 0)
            image = rng.choice(recent[-RECENT:]) if fresh else main
            try:
                await pull_image(client, recorder, image, "pull-fresh" if fresh else "pull", by_size=not fresh)
            except RequestFailed:
                await trio.sleep(0.2)  # as a retrying client would, without hammering
                continue
            recorder.pulls["fresh" if fresh else "main"] += 1


async def pusher(number: int, proxy: str, recorder: Recorder, main: Image, recent: list[Image],
                 options: Options, deadline: float) -> None:
    """Push loop on the proxy until the deadline: each time a new repository with fresh layers."""
    rng = random.Random()
    # The shared base layer, mounted from the main image (an OCI layer there, a Docker one here).
    base = attrs.evolve(min(main.layers, key=lambda blob: blob.size), media_type=DOCKER_LAYER_GZIP)
    async with httpx.AsyncClient(base_url=proxy, timeout=options.timeout) as client:
        n = 0
        while trio.current_time() < deadline:
            n += 1
            fresh = tuple(random_blob(rng.randint(options.push_layer_min, options.push_layer_max), DOCKER_LAYER_GZIP)
                          for _ in range(rng.randint(1, 2)))
            layers = (base, *fresh)
            config = config_blob(layers, DOCKER_CONFIG)
            try:
                image = await push_image(client, recorder, f"load/push{number}-{n}", "latest", config, layers,
                                         options.push_chunk, mounts=((base, main.repository),))
            except RequestFailed:
                await trio.sleep(0.2)
                continue
            recorder.pushes += 1
            recent.append(image)
            del recent[:-RECENT]


async def run_load(options: Options, work: Path) -> dict[str, Any]:
    """Start the daemons in ``work``, push the image, run the load and report; every process is
    stopped however the run ends."""
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work, (*QUIET, *options.settings))
    logs = LogFindings({name: cluster.log_path(name) for name in ("herd", "agent")})
    try:
        herd = await cluster.herd(wrapper=traced(work, "herd", options))
        agent = await cluster.agent(herd, "agent", wrapper=traced(work, "agent", options))
        figures = await _load(cluster, herd, agent, options)
        logs.mark()
    finally:
        with trio.CancelScope(shield=True):
            statuses = await cluster.stop(15)
    figures["exit_status"] = statuses
    if options.tracemalloc:
        figures["heap_growth"] = {name: heap_growth(work / f"{name}.tracemalloc") for name in ("herd", "agent")}
    figures["daemon_logs"] = logs.findings()
    return figures


def traced(work: Path, name: str, options: Options) -> tuple[str, ...]:
    """The argv prefix that runs a daemon under ``netsim.traced`` with ``--tracemalloc``."""
    return (sys.executable, "-m", "netsim.traced", str(work / f"{name}.tracemalloc")) if options.tracemalloc else ()


async def _load(cluster: Cluster, herd: DaemonProcess, agent: DaemonProcess, options: Options) -> dict[str, Any]:
    proxy, registry = herd.url("proxy"), agent.url("agent", "registry")
    sizes = layer_sizes(options.layers, options.min_layer, options.max_layer)
    main = await push_new_image(proxy, cluster.work, sizes, REPOSITORY, TAG, timeout=options.timeout)
    recorder, recent = Recorder(), list[Image]()
    memory = MemorySampler(cluster.processes)
    t0 = time.monotonic()
    deadline = trio.current_time() + options.duration
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memory.sample, t0)
        if options.tracemalloc:
            nursery.start_soon(memory.snapshot_heaps)
        async with trio.open_nursery() as load:
            for _ in range(options.pullers):
                load.start_soon(puller, registry, recorder, main, recent, options, deadline)
            for number in range(options.pushers):
                load.start_soon(pusher, number, proxy, recorder, main, recent, options, deadline)
        elapsed = time.monotonic() - t0
        if options.tracemalloc:
            memory.snapshot_now()  # the last one, under load still
            await trio.sleep(5)
        daemons = memory.figures()  # before the daemons stop: VmHWM goes with the process
        nursery.cancel_scope.cancel()
    return summarize(attrs.asdict(options), main, recorder, elapsed, daemons, memory.rss)


def main(argv: list[str] | None = None) -> int:
    """Run the load test from the command line; 0 if no request failed, else 1."""
    parser = argparse.ArgumentParser(prog="python -m netsim.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--pullers", type=int, default=16, help="concurrent pull loops on the agent")
    parser.add_argument("--pushers", type=int, default=2, help="concurrent push loops on the proxy")
    parser.add_argument("--layers", type=int, default=5, help="layers of the pulled image")
    parser.add_argument("--max-layer", default="32MiB", help="its largest layer (the smallest is 1KiB)")
    parser.add_argument("--fresh-every", type=int, default=4,
                        help="every n-th pull is of a freshly pushed image (0: never)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="a daemon setting for both daemons (repeatable), e.g. swarm.connections_limit=100")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace the daemons' Python heaps (slow; a snapshot a minute) and report what grew")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--workdir", type=Path, help="keep the daemons' data and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    options = Options(duration=args.duration, pullers=args.pullers, pushers=args.pushers, layers=args.layers,
                      max_layer=parse_size(args.max_layer), fresh_every=args.fresh_every,
                      settings=tuple(args.settings), tracemalloc=args.tracemalloc)
    if options.layers < 1 or options.max_layer < options.min_layer or options.pullers < 0 or options.pushers < 0:
        parser.error("--layers must be at least 1, --max-layer at least 1KiB, and no count negative")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="netsim-load-"))
    try:
        figures = trio.run(run_load, options, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    alive = all(daemon["alive"] for daemon in figures["daemons"].values())
    return 0 if figures["failed_requests"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
