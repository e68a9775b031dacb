"""The registry load test: docker-style pulls through one agent and pushes to the proxy, for minutes.

``python -m netsim.load [--duration 300] [--pullers 16] [--pushers 2] [--layers 5] [--json out.json]``

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
- a sampler reads each daemon's RSS from /proc every half second.

Every request is timed and checked (status, digests, sizes); one that raises or is answered
unexpectedly is a failed request, counted with its reason. The report gives requests per second
and latency percentiles per kind of request, bytes pulled, pulls and pushes completed, failures
and the daemons' peak RSS; the exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from netsim.cpu import own_seconds, process_seconds
from netsim.runner import make_blob
from swarmreg.config import parse_size
from swarmreg.devcluster import DaemonProcess, port_zero

KiB, MiB = 1 << 10, 1 << 20
PIECE = 1 * MiB  # pulls read blobs in pieces this big: a blob is never held whole
QUIET = ("store.fsync=false", 'log.level="warning"')
REPOSITORY, TAG = "load/app", "v1"
# What containerd's resolver (docker pull) accepts for a manifest.
ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PARALLEL_LAYERS = 3  # docker's max-concurrent-downloads
RECENT = 8  # freshly pushed images the pullers choose from
EXAMPLES = 10  # failures kept with their details
LOG_LEVEL = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (WARNING|ERROR|CRITICAL) ")


@attrs.frozen
class Options:
    """What to run: the load's shape and the image's."""

    duration: float = 300.0
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


@attrs.frozen
class Blob:
    """A blob of an image: its digest, size, media type, and where its bytes are (file or memory)."""

    digest: str
    size: int
    media_type: str
    path: Path | None = None
    data: bytes | None = None

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def pieces(self, size: int) -> Iterator[bytes]:
        """The blob's bytes in pieces of ``size`` (read from its file one at a time)."""
        if self.data is not None:
            yield from (self.data[i:i + size] for i in range(0, len(self.data), size))
            return
        assert self.path is not None
        with open(self.path, "rb") as file:
            while piece := file.read(size):
                yield piece


@attrs.frozen
class Image:
    """A pushed image: repository, tag, the manifest's digest and the blobs it names."""

    repository: str
    tag: str
    manifest_digest: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


class RequestFailed(Exception):
    """A request failed and was recorded as such: the iteration it belongs to stops."""


@attrs.define
class Recorder:
    """Every request's latency by kind, and the failures with their reasons."""

    latencies: dict[str, list[float]] = attrs.Factory(dict)
    failed_by_kind: Counter[str] = attrs.Factory(Counter)
    reasons: Counter[str] = attrs.Factory(Counter)
    examples: list[dict[str, Any]] = attrs.Factory(list)
    bytes_pulled: int = 0
    bytes_pushed: int = 0
    pulls: Counter[str] = attrs.Factory(Counter)  # image pulls completed: "main" and "fresh"
    pushes: int = 0
    started: float = attrs.Factory(time.monotonic)

    def ok(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, kind: str, reason: str, detail: str) -> RequestFailed:
        """Count a failed request; returns the exception that stops its iteration."""
        self.failed_by_kind[kind] += 1
        self.reasons[f"{kind}: {reason}"] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"t": round(time.monotonic() - self.started, 3), "kind": kind,
                                  "reason": reason, "detail": detail[:500]})
        return RequestFailed(reason)


async def request(client: httpx.AsyncClient, recorder: Recorder, kind: str, method: str, url: str,
                  expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
    """One timed request whose body is read whole (a small one); any other status fails it."""
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except Exception as error:  # noqa: BLE001 - whatever it raised, the request failed
        raise recorder.fail(kind, type(error).__name__, f"{method} {url}: {error!r}") from error
    if response.status_code not in expect:
        raise recorder.fail(kind, f"HTTP {response.status_code}", f"{method} {url}: {response.text[:300]}")
    recorder.ok(kind, time.perf_counter() - started)
    return response


async def get_blob(client: httpx.AsyncClient, recorder: Recorder, kind: str, url: str, blob: Blob) -> None:
    """GET a blob streamed in 1 MiB pieces, hashing as it comes; size and digest must match."""
    started = time.perf_counter()
    hasher, received = hashlib.sha256(), 0
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                await response.aread()
                raise recorder.fail(kind, f"HTTP {response.status_code}", f"GET {url}: {response.text[:300]}")
            async for piece in response.aiter_raw(PIECE):
                hasher.update(piece)
                received += len(piece)
    except RequestFailed:
        raise
    except Exception as error:  # noqa: BLE001
        raise recorder.fail(kind, type(error).__name__, f"GET {url} after {received} bytes: {error!r}") from error
    recorder.bytes_pulled += received
    if received != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
        raise recorder.fail(kind, "content does not match the digest",
                            f"GET {url}: {received} of {blob.size} bytes, sha256:{hasher.hexdigest()}")
    recorder.ok(kind, time.perf_counter() - started)


# --- pulls ------------------------------------------------------------------------------------


async def pull_image(client: httpx.AsyncClient, recorder: Recorder, image: Image, prefix: str, *,
                     by_size: bool = False) -> None:
    """What ``docker pull repo:tag`` asks the registry, every answer checked against ``image``; with
    ``by_size`` each layer's requests are a kind of their own (their latencies differ by far)."""
    manifest_url = f"/v2/{image.repository}/manifests"
    await request(client, recorder, f"{prefix}:base", "GET", "/v2/", (200,))
    head = await request(client, recorder, f"{prefix}:manifest-head", "HEAD", f"{manifest_url}/{image.tag}",
                         (200,), headers={"Accept": ACCEPT})
    if head.headers.get("Docker-Content-Digest") != image.manifest_digest:
        raise recorder.fail(f"{prefix}:manifest-head", "wrong manifest digest",
                            f"{image.repository}:{image.tag} -> {head.headers.get('Docker-Content-Digest')}, "
                            f"pushed {image.manifest_digest}")
    got = await request(client, recorder, f"{prefix}:manifest", "GET", f"{manifest_url}/{image.manifest_digest}",
                        (200,), headers={"Accept": ACCEPT})
    # The very bytes that were pushed, and so the blobs below, when the digest matches.
    if "sha256:" + hashlib.sha256(got.content).hexdigest() != image.manifest_digest:
        raise recorder.fail(f"{prefix}:manifest", "manifest does not match its digest", manifest_url)
    blobs = f"/v2/{image.repository}/blobs"
    await get_blob(client, recorder, f"{prefix}:config", f"{blobs}/{image.config.digest}", image.config)
    limiter = trio.CapacityLimiter(PARALLEL_LAYERS)

    async def layer(blob: Blob) -> None:
        async with limiter:
            kind = f"{prefix}:layer {_size(blob.size)}" if by_size else f"{prefix}:layer"
            await get_blob(client, recorder, kind, f"{blobs}/{blob.digest}", blob)

    try:
        async with trio.open_nursery() as nursery:
            for blob in image.layers:
                nursery.start_soon(layer, blob)
    except* RequestFailed as group:  # the first failure stops the pull; the others were cancelled
        raise group.exceptions[0] from None


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


# --- pushes -----------------------------------------------------------------------------------


async def push_blob(client: httpx.AsyncClient, recorder: Recorder, repository: str, blob: Blob,
                    chunk: int) -> None:
    """Docker's upload of one blob: HEAD (absent), POST a session, PATCH chunks in order, PUT ?digest=."""
    blobs = f"/v2/{repository}/blobs"
    await request(client, recorder, "push:blob-head", "HEAD", f"{blobs}/{blob.digest}", (404,))
    started = await request(client, recorder, "push:upload-start", "POST", f"{blobs}/uploads/", (202,))
    location, offset = started.headers.get("Location"), 0
    if not location:
        raise recorder.fail("push:upload-start", "no Location", f"POST {blobs}/uploads/: {started.headers}")
    for piece in blob.pieces(chunk):
        headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}", "Content-Type": "application/octet-stream"}
        patched = await request(client, recorder, "push:upload-chunk", "PATCH", location, (202,),
                                content=piece, headers=headers)
        offset += len(piece)
        if patched.headers.get("Range") != f"0-{offset - 1}":
            raise recorder.fail("push:upload-chunk", "wrong Range after a chunk",
                                f"{location}: {patched.headers.get('Range')}, sent 0-{offset - 1}")
        location = patched.headers.get("Location", location)
    done = await request(client, recorder, "push:upload-finish", "PUT", location, (201,),
                         params={"digest": blob.digest})
    if done.headers.get("Docker-Content-Digest") != blob.digest:
        raise recorder.fail("push:upload-finish", "wrong digest", f"{location}: {done.headers}")
    recorder.bytes_pushed += blob.size


async def mount_blob(client: httpx.AsyncClient, recorder: Recorder, repository: str, blob: Blob,
                     source: str) -> None:
    """Docker's cross-repository mount of a layer the registry has in ``source``."""
    await request(client, recorder, "push:blob-head", "HEAD", f"/v2/{repository}/blobs/{blob.digest}", (404,))
    await request(client, recorder, "push:mount", "POST", f"/v2/{repository}/blobs/uploads/", (201,),
                  params={"mount": blob.digest, "from": source})


async def put_manifest(client: httpx.AsyncClient, recorder: Recorder, repository: str, tag: str,
                       config: Blob, layers: tuple[Blob, ...], media_type: str) -> str:
    """PUT the image manifest under ``tag``; returns its digest (checked against what the proxy says)."""
    data = manifest_bytes(config, layers, media_type)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    put = await request(client, recorder, "push:manifest", "PUT", f"/v2/{repository}/manifests/{tag}", (201,),
                        content=data, headers={"Content-Type": media_type})
    if put.headers.get("Docker-Content-Digest") != digest:
        raise recorder.fail("push:manifest", "wrong digest", f"{repository}:{tag}: {put.headers}")
    return digest


async def push_image(client: httpx.AsyncClient, recorder: Recorder, repository: str, tag: str,
                     config: Blob, layers: tuple[Blob, ...], chunk: int, *, media_type: str = DOCKER_MANIFEST,
                     mounts: tuple[tuple[Blob, str], ...] = ()) -> Image:
    """``docker push``: the API check, mounts, each new blob's upload, then the manifest."""
    await request(client, recorder, "push:base", "GET", "/v2/", (200,))
    mounted = {blob.digest for blob, _ in mounts}
    for blob, source in mounts:
        await mount_blob(client, recorder, repository, blob, source)
    for blob in (*layers, config):
        if blob.digest not in mounted:
            await push_blob(client, recorder, repository, blob, chunk)
    digest = await put_manifest(client, recorder, repository, tag, config, layers, media_type)
    return Image(repository, tag, digest, config, layers)


async def pusher(number: int, proxy: str, recorder: Recorder, main: Image, recent: list[Image],
                 options: Options, deadline: float) -> None:
    """Push loop on the proxy until the deadline: each time a new repository with fresh layers."""
    rng = random.Random()
    # The shared base layer, mounted from the main image (an OCI layer there, a Docker one here).
    base = attrs.evolve(min(main.layers, key=lambda blob: blob.size), media_type=DOCKER_LAYER)
    async with httpx.AsyncClient(base_url=proxy, timeout=options.timeout) as client:
        n = 0
        while trio.current_time() < deadline:
            n += 1
            fresh = tuple(random_blob(rng.randint(options.push_layer_min, options.push_layer_max), DOCKER_LAYER)
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


# --- images -----------------------------------------------------------------------------------


def random_blob(size: int, media_type: str) -> Blob:
    data = os.urandom(size)
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), size, media_type, data=data)


def random_file(path: Path, size: int, media_type: str) -> Blob:
    """A random layer of ``size`` bytes written to ``path``."""
    return Blob(make_blob(path, size), size, media_type, path=path)


def config_blob(layers: tuple[Blob, ...], media_type: str) -> Blob:
    """An image config naming the layers (their digests stand in for the uncompressed diff ids)."""
    data = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]}}).encode()
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data=data)


def manifest_bytes(config: Blob, layers: tuple[Blob, ...], media_type: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": config.descriptor(),
                       "layers": [layer.descriptor() for layer in layers]}, indent=3).encode()


def layer_sizes(count: int, smallest: int, largest: int) -> list[int]:
    """``count`` sizes spread geometrically from ``smallest`` to ``largest`` (1 KiB .. 32 MiB by default)."""
    if count == 1:
        return [largest]
    ratio = (largest / smallest) ** (1 / (count - 1))
    return [round(smallest * ratio ** i) for i in range(count)]


def make_image(work: Path, options: Options) -> tuple[Blob, tuple[Blob, ...]]:
    """The main image's config and layers (an OCI image); the layers are files in ``work``."""
    layers = tuple(random_file(work / f"layer{i}", size, OCI_LAYER)
                   for i, size in enumerate(layer_sizes(options.layers, options.min_layer, options.max_layer)))
    return config_blob(layers, OCI_CONFIG), layers


# --- daemons ----------------------------------------------------------------------------------


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of a process, in KiB; empty once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(value.split()[0]) for key, _, value in (line.partition(":") for line in text.splitlines())
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


class Cluster:
    """The herd and the agent, each a child process with its own data directory and log."""

    def __init__(self, work: Path, settings: tuple[str, ...] = ()) -> None:
        self.work = work
        self.settings = settings
        self.processes: list[DaemonProcess] = []
        # name -> samples of (seconds, RSS, anonymous RSS, file-backed RSS), in KiB: file pages are
        # mapped blobs (libtorrent's storage maps the files it serves), anonymous ones the heaps
        self.rss: dict[str, list[tuple[float, int, int, int]]] = {}
        self.log_marks: dict[str, int] = {}

    async def start(self) -> tuple[DaemonProcess, DaemonProcess]:
        herd = await self._start("herd", ["origin", "tracker", "index", "proxy"])
        agent = await self._start("agent", ["agent"], f"agent.tracker={herd.address('tracker', 'ws')}",
                                  f"agent.index={herd.address('index', 'http')}")
        return herd, agent

    async def _start(self, name: str, roles: list[str], *overrides: str) -> DaemonProcess:
        process = DaemonProcess(name, roles, self.work / name, overrides=[*port_zero(roles), *QUIET, *self.settings, *overrides],
                                stderr=open(self.work / f"{name}.log", "ab"))
        self.processes.append(process)
        await process.start()
        return process

    def pid(self, process: DaemonProcess) -> int:
        assert process.process is not None
        return process.process.pid

    def alive(self, process: DaemonProcess) -> bool:
        return process.process is not None and process.process.poll() is None

    async def sample(self, t0: float, interval: float = 0.5) -> None:
        """Every ``interval`` seconds each daemon's RSS, until cancelled."""
        while True:
            for process in self.processes:
                if (status := read_status(self.pid(process))).get("VmRSS"):
                    self.rss.setdefault(process.name, []).append((
                        round(time.monotonic() - t0, 2), status["VmRSS"], status.get("RssAnon", 0),
                        status.get("RssFile", 0)))
            await trio.sleep(interval)

    def memory(self) -> dict[str, dict[str, Any]]:
        """Per daemon: peak RSS (the sampled one and the kernel's VmHWM), RSS at start and end, CPU."""
        figures = {}
        for process in self.processes:
            series = self.rss.get(process.name, [])
            samples, anon = [sample[1] for sample in series], [sample[2] for sample in series]
            status = read_status(self.pid(process))
            peak = max([*samples, status.get("VmHWM", 0)])
            figures[process.name] = {
                "pid": self.pid(process), "roles": list(process.roles), "alive": self.alive(process),
                "peak_rss_mib": peak / 1024, "sampled_peak_rss_mib": max(samples, default=0) / 1024,
                "vm_hwm_mib": status.get("VmHWM", 0) / 1024,
                "rss_first_mib": samples[0] / 1024 if samples else 0.0,
                "rss_last_mib": samples[-1] / 1024 if samples else 0.0, "cpu_s": process_seconds(self.pid(process)),
                "rss_slope_mib_per_min": _late_slope([(sample[0], sample[1]) for sample in series]),
                "anon_first_mib": anon[0] / 1024 if anon else 0.0, "anon_last_mib": anon[-1] / 1024 if anon else 0.0,
                "anon_peak_mib": max(anon, default=0) / 1024,
                "anon_slope_mib_per_min": _late_slope([(sample[0], sample[2]) for sample in series])}
        return figures

    async def stop(self) -> dict[str, int]:
        """Stop every process (the agent first); returns each one's exit status."""
        statuses = {}
        for process in reversed(self.processes):
            statuses[process.name] = await process.stop(timeout=15)
        return statuses

    def mark_logs(self) -> None:
        """Note where each log ends now: what comes after was logged while stopping."""
        self.log_marks = {process.name: _size_of(self.work / f"{process.name}.log") for process in self.processes}

    def log_findings(self) -> dict[str, dict[str, Any]]:
        """Warnings and errors each daemon logged (they run at log level warning), during the load
        and while stopping."""
        findings = {}
        for process in self.processes:
            path = self.work / f"{process.name}.log"
            data = path.read_bytes() if path.exists() else b""
            mark = self.log_marks.get(process.name, len(data))
            findings[process.name] = {"during_load": _log_levels(data[:mark].decode(errors="replace")),
                                      "while_stopping": _log_levels(data[mark:].decode(errors="replace"))}
        return findings


def _late_slope(samples: list[tuple[float, int]]) -> float | None:
    """RSS growth over the second half of the run, in MiB a minute (a least-squares fit): the
    first half is warm-up (caches filling), what still grows after it may be a leak."""
    late = samples[len(samples) // 2:]
    if len(late) < 3 or late[0][0] == late[-1][0]:
        return None
    slope = statistics.linear_regression([t for t, _ in late], [kib for _, kib in late]).slope
    return slope * 60 / 1024


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_levels(text: str) -> dict[str, Any]:
    """Lines per level in a daemon's log text, tracebacks, and the first few of those lines."""
    lines = text.splitlines()
    levels = Counter(match.group(1) for line in lines if (match := LOG_LEVEL.match(line)))
    tracebacks = sum(line.startswith(("Traceback", "  + Exception Group Traceback")) for line in lines)
    return {"lines": len(lines), "levels": dict(levels), "tracebacks": tracebacks,
            "first": [line[:300] for line in lines if LOG_LEVEL.match(line)][:5]}


# --- the run ----------------------------------------------------------------------------------


async def run_load(options: Options, work: Path) -> dict[str, Any]:
    """Start the daemons in ``work``, push the image, run the load and report; every process is
    stopped however the run ends."""
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work, options.settings)
    try:
        herd, agent = await cluster.start()
        figures = await _load(cluster, herd, agent, options)
        cluster.mark_logs()
    finally:
        with trio.CancelScope(shield=True):
            statuses = await cluster.stop()
    figures["exit_status"] = statuses
    figures["daemon_logs"] = cluster.log_findings()
    return figures


async def _load(cluster: Cluster, herd: DaemonProcess, agent: DaemonProcess, options: Options) -> dict[str, Any]:
    proxy, registry = herd.url("proxy"), agent.url("agent", "registry")
    config, layers = await trio.to_thread.run_sync(make_image, cluster.work, options)
    setup = Recorder()
    async with httpx.AsyncClient(base_url=proxy, timeout=options.timeout) as client:
        try:
            main = await push_image(client, setup, REPOSITORY, TAG, config, layers, 8 * MiB,
                                    media_type=OCI_MANIFEST)
        except RequestFailed:
            raise RuntimeError(f"pushing the image to pull failed: {setup.examples}") from None
    recorder, recent = Recorder(), list[Image]()
    t0 = time.monotonic()
    deadline = trio.current_time() + options.duration
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.sample, t0)
        async with trio.open_nursery() as load:
            for _ in range(options.pullers):
                load.start_soon(puller, registry, recorder, main, recent, options, deadline)
            for number in range(options.pushers):
                load.start_soon(pusher, number, proxy, recorder, main, recent, options, deadline)
        elapsed = time.monotonic() - t0
        memory = cluster.memory()  # before the daemons stop: VmHWM goes with the process
        nursery.cancel_scope.cancel()
    return summarize(options, main, recorder, elapsed, memory, cluster.rss)


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an already sorted list."""
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _kind_order(kind: str) -> tuple[str, float]:
    """Kinds by name, a layer's by its size ("pull:layer 512 KiB" before "pull:layer 4 MiB")."""
    name, _, size = kind.partition(" ")
    if not size:
        return name, 0.0
    number, unit = size.split()
    return name, float(number) * (MiB if unit == "MiB" else KiB)


def summarize(options: Options, main: Image, recorder: Recorder, elapsed: float, memory: dict[str, Any],
              rss: dict[str, list[tuple[float, int, int, int]]]) -> dict[str, Any]:
    """The report's figures: per-kind rates and latency percentiles, throughput, failures, memory."""
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({*recorder.latencies, *recorder.failed_by_kind}, key=_kind_order):
        ordered = sorted(recorder.latencies.get(kind, []))
        failed = recorder.failed_by_kind[kind]
        entry: dict[str, Any] = {"requests": len(ordered) + failed, "ok": len(ordered), "failed": failed,
                                 "per_s": (len(ordered) + failed) / elapsed}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            entry[f"{name}_ms"] = 1000 * percentile(ordered, q) if ordered else None
        kinds[kind] = entry
    total = sum(entry["requests"] for entry in kinds.values())
    return {
        "duration_s": options.duration, "elapsed_s": elapsed, "pullers": options.pullers,
        "pushers": options.pushers, "options": attrs.asdict(options),
        "image": {"repository": main.repository, "tag": main.tag, "manifest": main.manifest_digest,
                  "layers": [layer.size for layer in main.layers], "bytes": main.size},
        "requests": total, "requests_per_s": total / elapsed,
        "failed_requests": sum(recorder.failed_by_kind.values()), "failures": dict(recorder.reasons),
        "failure_examples": recorder.examples, "kinds": kinds,
        "bytes_pulled": recorder.bytes_pulled, "pulled_mib_per_s": recorder.bytes_pulled / MiB / elapsed,
        "bytes_pushed": recorder.bytes_pushed, "image_pulls": dict(recorder.pulls),
        "image_pulls_total": sum(recorder.pulls.values()), "pushes": recorder.pushes,
        "daemons": memory, "rss_samples_kib": {"columns": ["t", "rss", "anon", "file"], **rss},
        "load_generator_cpu_s": own_seconds(),
    }


# --- the report -------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(figures: dict[str, Any]) -> str:
    """A terminal table of the run: one row per kind of request, then totals, failures and memory."""
    image = figures["image"]
    lines = [
        f"netsim load: {figures['elapsed_s']:.0f} s, pullers on the agent: {figures['pullers']}, "
        f"pushers on the proxy: {figures['pushers']}, {os.cpu_count()} cores, loopback",
        f"image {image['repository']}:{image['tag']}: {len(image['layers'])} layers, "
        f"{image['bytes'] / MiB:.1f} MiB ({', '.join(_size(size) for size in image['layers'])})",
        "",
        f"{'kind':<26}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>10}"
        f"{'failed':>8}",
    ]
    for kind, entry in figures["kinds"].items():
        lines.append(f"{kind:<26}{entry['requests']:>10}{entry['per_s']:>9.1f}"
                     + "".join(f"{_ms(entry[f'{q}_ms']):>{9 if q != 'max' else 10}}" for q in ("p50", "p90", "p99", "max"))
                     + f"{entry['failed']:>8}")
    pulls = figures["image_pulls"]
    lines += [
        f"{'all':<26}{figures['requests']:>10}{figures['requests_per_s']:>9.1f}{'':>45}{figures['failed_requests']:>8}",
        "",
        f"pulled {figures['bytes_pulled'] / (1 << 30):.2f} GiB ({figures['pulled_mib_per_s']:.1f} MiB/s); "
        f"image pulls {figures['image_pulls_total']} ({pulls.get('main', 0)} of the main image, "
        f"{pulls.get('fresh', 0)} of freshly pushed ones); pushes {figures['pushes']} "
        f"({figures['bytes_pushed'] / MiB:.1f} MiB)",
        f"failed requests: {figures['failed_requests']}",
    ]
    for reason, count in figures["failures"].items():
        lines.append(f"  {count} x {reason}")
    for example in figures["failure_examples"][:3]:
        lines.append(f"  e.g. at {example['t']:.1f} s: {example['detail']}")
    lines += ["", "memory (MiB): RSS = anonymous (heaps) + file-backed (mapped blobs); 'late' = growth a minute "
              "over the second half", f"{'daemon':<8}{'peak RSS':>10}{'first':>8}{'last':>8}{'late/min':>10}"
              f"{'anon peak':>11}{'first':>8}{'last':>8}{'late/min':>10}{'CPU s':>8}  exit  log warn/error: load, stop"]
    for name, daemon in figures["daemons"].items():
        logs = figures.get("daemon_logs", {}).get(name, {})
        cpu = f"{daemon['cpu_s']:.0f}"
        slope, anon_slope = (_slope(daemon["rss_slope_mib_per_min"]), _slope(daemon["anon_slope_mib_per_min"]))
        lines.append(f"{name:<8}{daemon['peak_rss_mib']:>10.1f}{daemon['rss_first_mib']:>8.1f}"
                     f"{daemon['rss_last_mib']:>8.1f}{slope:>10}{daemon['anon_peak_mib']:>11.1f}"
                     f"{daemon['anon_first_mib']:>8.1f}{daemon['anon_last_mib']:>8.1f}{anon_slope:>10}{cpu:>8}"
                     f"  {figures.get('exit_status', {}).get(name, '-')!s:>4}"
                     f"  {_log_counts(logs.get('during_load'))}, {_log_counts(logs.get('while_stopping'))}")
    for name, logs in figures.get("daemon_logs", {}).items():
        for line in logs["during_load"]["first"][:3]:
            lines.append(f"  {name}: {line}")
    lines.append(f"load generator (this process): {figures['load_generator_cpu_s']:.0f} CPU s")
    return "\n".join(lines)


def _slope(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _log_counts(found: dict[str, Any] | None) -> str:
    if not found:
        return "-"
    levels = found["levels"]
    text = f"{levels.get('WARNING', 0)}/{levels.get('ERROR', 0) + levels.get('CRITICAL', 0)}"
    return text + (f" ({found['tracebacks']} tracebacks)" if found["tracebacks"] else "")


def _size(size: int) -> str:
    return f"{size / MiB:.3g} MiB" if size >= MiB else f"{size / KiB:.3g} KiB"


def main(argv: list[str] | None = None) -> int:
    """Run the load test from the command line; 0 if no request failed, else 1."""
    parser = argparse.ArgumentParser(prog="python -m netsim.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--pullers", type=int, default=16, help="concurrent pull loops on the agent")
    parser.add_argument("--pushers", type=int, default=2, help="concurrent push loops on the proxy")
    parser.add_argument("--layers", type=int, default=5, help="layers of the pulled image")
    parser.add_argument("--max-layer", default="32MiB", help="its largest layer (the smallest is 1KiB)")
    parser.add_argument("--fresh-every", type=int, default=4,
                        help="every n-th pull is of a freshly pushed image (0: never)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="a daemon setting for both daemons (repeatable), e.g. swarm.connections_limit=100")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--workdir", type=Path, help="keep the daemons' data and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    options = Options(duration=args.duration, pullers=args.pullers, pushers=args.pushers, layers=args.layers,
                      max_layer=parse_size(args.max_layer), fresh_every=args.fresh_every,
                      settings=tuple(args.settings))
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
