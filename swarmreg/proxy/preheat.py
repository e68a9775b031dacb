"""Preload and preheat (issue 12): make the herd fetch and seed every blob of a list of images,
and optionally have agents fetch them too, ahead of a deploy.

One job, three entry points: ``POST /preheat`` on the proxy (swarmreg.proxy.preheat_routes),
``swarmreg load`` (which posts that), and ``swarmreg daemon --preload-images``. For each image
reference (swarmreg.proxy.wire says how one is read) the job resolves the tag or digest at the
index (an upstream image pulls through there), reads the manifest's bytes from the origin, walks
an index's children (all of them, or with a platform only the matching one's layers, the index
and every child manifest still kept whole), and asks the origin for each blob's metainfo, which
makes the origin fetch the blob (from its backend, an upstream's included) and seed it. With
``agents``, the agents the tracker knows (N of them, or all) are then asked to prefetch every blob.

Bounded: a few images at once, a few blobs at once, and the job's progress document is small
(counts, the first errors, one line per image). Errors carry messages only, never a traceback
or a path.
"""

from __future__ import annotations

import logging
import random
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
import trio

from swarmreg.agent.client import AgentClient
from swarmreg.agent.wire import PREFETCH_DONE, PREFETCH_FAILED
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import ALGORITHMS, Digest
from swarmreg.errors import (
    BAD_GATEWAY,
    DENIED,
    MANIFEST_UNKNOWN,
    TOOMANYREQUESTS,
    UNAVAILABLE,
    SwarmregError,
    internal_error,
)
from swarmreg.oci.manifest import parse_manifest
from swarmreg.proxy.wire import ALL_AGENTS, DONE, FAILED, RUNNING, JobRequest, PlatformSpec, Target
from swarmreg.registry.lookup import IndexReader, has_repository, resolve
from swarmreg.tracker.client import list_agents

log = logging.getLogger(__name__)

# The empty blob (of each algorithm) has no torrent: its content is known, nothing to fetch.
EMPTY = frozenset(Digest.of(b"", algorithm) for algorithm in ALGORITHMS)
# Images a job works on at once, and blobs (origin fetches, agent prefetches per agent).
IMAGES_AT_ONCE = 4
BLOBS_AT_ONCE = 8
# An index may list indexes; deeper nesting is refused (as the index's pull-through does).
MAX_DEPTH = 2
# A job's progress keeps this many errors (the rest are counted).
MAX_ERRORS = 100
# Finished jobs are kept this long (seconds) and at most this many, then forgotten.
FINISHED_TTL = 3600.0
KEPT_JOBS = 100
# Agents a job talks to at once (over all its images): "all" of a large fleet is asked in turns.
AGENTS_AT_ONCE = 32
# How often a job reads an agent's prefetch states (from the first interval, doubling up to the
# last while nothing changes), and how long it waits for one blob at most.
POLL_INTERVAL = (0.1, 2.0)
PREFETCH_WAIT = 3600.0


class OriginReader(Protocol):
    """The origin calls a job makes (an OriginClient)."""

    async def read(self, namespace: str, digest: Digest) -> bytes: ...

    async def metainfo(self, namespace: str, digest: Digest) -> Any: ...


class Prefetching(Protocol):
    """One agent's prefetch API (an AgentClient)."""

    async def prefetch(self, namespace: str, digest: Digest) -> dict[str, Any]: ...

    async def prefetch_status(self, namespace: str, digest: Digest) -> dict[str, Any]: ...


class AgentDirectory(Protocol):
    """Where the agents are (the tracker), and how to reach one."""

    async def agents(self) -> Sequence[Address]: ...

    def client(self, address: Address) -> AbstractAsyncContextManager[Prefetching]: ...


class TrackerAgents:
    """The agents connected to a tracker, reached over their blob API with the cluster secret."""

    def __init__(self, trackers: Ring | None, *, tls: ssl.SSLContext | None = None, secret: str = "") -> None:
        self.trackers = trackers  # the first live one is asked: the one the agents use too
        self.tls = tls
        self.secret = secret

    async def agents(self) -> Sequence[Address]:
        if self.trackers is None or not self.trackers.members:
            raise SwarmregError(UNAVAILABLE, "no tracker to ask for agents: set cluster.trackers or proxy.tracker, "
                                "or run the tracker role in the proxy's daemon")
        return [Address(agent.host, agent.port)
                for agent in await list_agents(self.trackers.order()[0], tls=self.tls, secret=self.secret)]

    def client(self, address: Address) -> AbstractAsyncContextManager[Prefetching]:
        return AgentClient(address, secret=self.secret)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@attrs.define
class Counter:
    total: int = 0
    done: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "failed": self.failed}


@attrs.define
class ImageResult:
    """How one image of a job went."""

    target: Target
    status: str = "pending"  # pending, running, done, failed
    repository: str | None = None
    digest: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.target.text, "status": self.status}
        for key in ("repository", "digest", "error"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out


@attrs.define
class _BlobWork:
    """One blob's fetch at the origin, shared by the images of the job that name it."""

    done: trio.Event = attrs.field(factory=trio.Event)
    error: str | None = None


class PreheatJob:
    """A job's request and its progress (``document()``)."""

    def __init__(self, request: JobRequest, job_id: str | None = None) -> None:
        self.id = job_id or secrets.token_hex(16)
        self.request = request
        self.created = _now()
        self.finished: str | None = None
        self.finished_at: float | None = None  # trio's clock, for forgetting it
        self.status = RUNNING
        self.images = [ImageResult(target) for target in request.targets]
        self.blobs = Counter()
        self.bytes_total = self.bytes_done = 0
        self.agents_asked = 0
        self.agent_blobs = Counter()
        self.errors: list[dict[str, Any]] = []
        self.errors_dropped = 0
        self.ended = trio.Event()
        self._work: dict[tuple[str, Digest], _BlobWork] = {}
        self._agent_slots = trio.CapacityLimiter(AGENTS_AT_ONCE)

    @property
    def repositories(self) -> tuple[str, ...]:
        """Every repository the job's references may name."""
        return tuple(dict.fromkeys(r for target in self.request.targets for r in target.repositories))

    def error(self, message: str, image: str | None = None, **detail: Any) -> None:
        """Record an error (the first MAX_ERRORS of them; the rest are counted)."""
        if len(self.errors) >= MAX_ERRORS:
            self.errors_dropped += 1
            return
        self.errors.append({**({"image": image} if image else {}), "message": message, **detail})

    def finish(self) -> None:
        failed = any(image.status != DONE for image in self.images) or bool(self.errors)
        self.status = FAILED if failed else DONE
        self.finished = _now()
        self.finished_at = trio.current_time()
        self._work.clear()  # a finished job keeps its counts, not one entry per blob
        self.ended.set()

    def document(self) -> dict[str, Any]:
        """The progress document ``GET /preheat/<id>`` answers."""
        images = Counter(len(self.images), sum(i.status == DONE for i in self.images),
                         sum(i.status == FAILED for i in self.images))
        body: dict[str, Any] = {
            "id": self.id, "status": self.status, "created": self.created, "finished": self.finished,
            "platform": str(self.request.platform) if self.request.platform else None,
            "images": images.to_json(), "blobs": self.blobs.to_json(),
            "bytes": {"total": self.bytes_total, "done": self.bytes_done},
            "errors": self.errors, "results": [image.to_json() for image in self.images]}
        if self.request.agents is not None:
            body["agents"] = {"requested": self.request.agents, "asked": self.agents_asked,
                              "blobs": self.agent_blobs.to_json()}
        if self.errors_dropped:
            body["errors_dropped"] = self.errors_dropped
        return body


async def run_job(job: PreheatJob, index: IndexReader, origin: OriginReader, agents: AgentDirectory | None = None,
                  *, on_image: Callable[[PreheatJob, ImageResult], None] | None = None) -> None:
    """Run ``job`` to its end (``job.status`` done or failed); never raises but Cancelled.
    ``on_image`` hears of each image as it ends (the daemon's preload logs them)."""
    try:
        picked = await _pick_agents(job, agents) if job.request.agents is not None and agents is not None else []
        if job.request.agents is not None and agents is None:
            job.error("this node cannot reach agents: no tracker is configured")
        limiter = trio.CapacityLimiter(BLOBS_AT_ONCE)
        slots = trio.Semaphore(IMAGES_AT_ONCE)
        async with trio.open_nursery() as nursery:
            for image in job.images:
                await slots.acquire()
                nursery.start_soon(_image_task, job, image, index, origin, agents, picked, limiter, slots, on_image)
    except Exception:  # a bug of ours: this job fails, the proxy serves on
        job.error(internal_error(log, f"preheat job {job.id}").message)
    finally:
        job.finish()
    log.info("preheat job %s %s: %d image(s), %d/%d blob(s), %d error(s)", job.id, job.status,
             len(job.images), job.blobs.done, job.blobs.total, len(job.errors) + job.errors_dropped)


async def _pick_agents(job: PreheatJob, directory: AgentDirectory) -> list[Address]:
    try:
        known = list(dict.fromkeys(await directory.agents()))
    except SwarmregError as error:
        job.error(f"cannot list the agents: {error.message}")
        return []
    wanted = job.request.agents
    if wanted == ALL_AGENTS:
        picked = known
    else:
        assert isinstance(wanted, int)
        picked = random.sample(known, min(wanted, len(known)))
        if len(known) < wanted:
            job.error(f"{wanted} agent(s) asked for, the tracker knows {len(known)}")
    if not picked and wanted == ALL_AGENTS:
        job.error("the tracker knows no agent")
    job.agents_asked = len(picked)
    return picked


async def _image_task(job: PreheatJob, image: ImageResult, index: IndexReader, origin: OriginReader,
                      agents: AgentDirectory | None, picked: list[Address], limiter: trio.CapacityLimiter,
                      slots: trio.Semaphore, on_image: Callable[[PreheatJob, ImageResult], None] | None) -> None:
    try:
        image.status = RUNNING
        failed = await _preheat_image(job, image, index, origin, agents, picked, limiter)
        image.status = FAILED if failed else DONE
    except SwarmregError as error:
        image.status, image.error = FAILED, error.message
        job.error(error.message, image.target.text)
    except Exception:
        image.status = FAILED
        image.error = internal_error(log, f"preheat of {image.target.text}").message
        job.error(image.error, image.target.text)
    finally:
        slots.release()
    if on_image is not None:
        on_image(job, image)


async def _lookup(index: IndexReader, repository: str, reference: str) -> tuple[str, Digest, dict[str, Any]] | None:
    """The manifest ``reference`` names in ``repository`` with its record, or None."""
    try:
        return (repository, *await resolve(index, repository, reference))
    except SwarmregError as error:
        if error.code is MANIFEST_UNKNOWN:
            return None
        raise


async def _resolve(index: IndexReader, target: Target, denied: frozenset[str]) -> tuple[str, Digest, dict[str, Any]]:
    """The image's repository, manifest digest and record (an upstream's pulls through at the
    index). A bare name goes to ``default_registry`` only when swarmreg has no repository of that
    name at all, and only if the requester may pull there (not in ``denied``)."""
    found = await _lookup(index, target.repository, target.reference)
    if found is None and target.fallback is not None and not await has_repository(index, target.repository):
        if target.fallback in denied:
            raise SwarmregError(DENIED, f"image {target.text}: pull is denied on {target.fallback}, where "
                                "default_registry would find it", {"repository": target.fallback})
        found = await _lookup(index, target.fallback, target.reference)
    if found is None:
        raise SwarmregError(MANIFEST_UNKNOWN, f"image {target.text} not found", {"repository": target.repository})
    return found


async def _preheat_image(job: PreheatJob, image: ImageResult, index: IndexReader, origin: OriginReader,
                         agents: AgentDirectory | None, picked: list[Address], limiter: trio.CapacityLimiter) -> bool:
    """Preheat one image; returns whether any of its blobs failed (each recorded as an error)."""
    repository, digest, meta = await _resolve(index, image.target, job.request.denied)
    image.repository, image.digest = repository, str(digest)
    blobs: dict[Digest, int] = {}
    await _walk(index, origin, repository, digest, meta, job.request.platform, blobs, 0)
    wanted = [(blob, size) for blob, size in blobs.items() if blob not in EMPTY]
    failures: list[str] = []
    async with trio.open_nursery() as nursery:
        for blob, size in wanted:
            nursery.start_soon(_seed, job, image, origin, repository, blob, size, limiter, failures)
    if failures:
        image.error = failures[0]
        return True
    if picked and agents is not None:
        async with trio.open_nursery() as nursery:
            for number, address in enumerate(picked, 1):
                nursery.start_soon(_prefetch_on, job, image, agents, address, number, repository,
                                   [blob for blob, _ in wanted], failures)
        if failures:
            image.error = failures[0]
            return True
    return False


async def _walk(index: IndexReader, origin: OriginReader, repository: str, digest: Digest, meta: dict[str, Any],
                platform: PlatformSpec | None, blobs: dict[Digest, int], depth: int, *, layers: bool = True) -> None:
    """Add the manifest and what it names to ``blobs`` (digest -> size): an image's config and
    layers (with ``layers``), an index's children; with ``platform`` only the matching children's
    layers, though every child manifest is kept (the index stays whole)."""
    data = await origin.read(repository, digest)
    if Digest.of(data, digest.algorithm) != digest:
        log.warning("the origin's bytes of manifest %s in %s do not match its digest", digest, repository)
        raise SwarmregError(BAD_GATEWAY, f"the origin's copy of manifest {digest} does not match its digest")
    manifest = parse_manifest(data, meta.get("media_type"), algorithm=digest.algorithm)
    blobs[digest] = len(data)
    if not manifest.is_index:
        if layers:
            for blob in (manifest.config, *manifest.layers):
                if blob is not None and not blob.external:
                    blobs.setdefault(blob.digest, blob.size)
        return
    if depth >= MAX_DEPTH:
        raise SwarmregError(MANIFEST_UNKNOWN, f"manifest {digest} nests indexes deeper than {MAX_DEPTH}")
    matched = False
    for entry in manifest.manifests:
        wanted = platform is None or (entry.platform is not None and platform.matches(
            entry.platform.os, entry.platform.architecture, entry.platform.variant))
        matched = matched or wanted
        child = await index.get_manifest(repository, entry.digest)
        if child is None:
            raise SwarmregError(MANIFEST_UNKNOWN, f"manifest {entry.digest}, listed by index {digest}, is not in "
                                f"{repository}", {"digest": str(entry.digest)})
        await _walk(index, origin, repository, entry.digest, child, platform, blobs, depth + 1,
                    layers=layers and wanted)
    if platform is not None and not matched and layers:
        raise SwarmregError(MANIFEST_UNKNOWN, f"index {digest} has no manifest for platform {platform}",
                            {"platform": str(platform)})


async def _seed(job: PreheatJob, image: ImageResult, origin: OriginReader, repository: str, digest: Digest,
                size: int, limiter: trio.CapacityLimiter, failures: list[str]) -> None:
    """Have the origin fetch and seed the blob (once per job and repository)."""
    key = (repository, digest)
    work = job._work.get(key)
    if work is None:
        work = job._work[key] = _BlobWork()
        job.blobs.total += 1
        job.bytes_total += size
        try:
            async with limiter:
                await origin.metainfo(repository, digest)
            job.blobs.done += 1
            job.bytes_done += size
        except SwarmregError as error:
            work.error = f"blob {digest}: {error.message}"
            job.blobs.failed += 1
            job.error(work.error, image.target.text, digest=str(digest))
        except Exception:
            work.error = f"blob {digest}: " + internal_error(log, f"preheat of {digest}").message
            job.blobs.failed += 1
            job.error(work.error, image.target.text, digest=str(digest))
        finally:
            work.done.set()
    await work.done.wait()
    if work.error is not None:
        failures.append(work.error)


async def _prefetch_on(job: PreheatJob, image: ImageResult, agents: AgentDirectory, address: Address, number: int,
                       repository: str, blobs: list[Digest], failures: list[str]) -> None:
    """Ask one agent to prefetch ``blobs``, BLOBS_AT_ONCE at a time, and wait until it has them."""
    job.agent_blobs.total += len(blobs)

    def failed(digest: Digest, message: str) -> None:
        text = f"agent {number} of {job.agents_asked}, blob {digest}: {message}"
        log.warning("preheat job %s: agent %s, blob %s: %s", job.id, address, digest, message)
        job.agent_blobs.failed += 1
        job.error(text, image.target.text, digest=str(digest))
        failures.append(text)

    async with job._agent_slots, agents.client(address) as client:
        waiting = list(blobs)
        running: dict[Digest, float] = {}  # -> when it was asked for
        interval = POLL_INTERVAL[0]
        busy_since: float | None = None  # the agent has answered 429 since then
        while waiting or running:
            progressed = False
            while waiting and len(running) < BLOBS_AT_ONCE:
                digest = waiting[0]
                try:
                    state = await client.prefetch(repository, digest)
                except SwarmregError as error:
                    if error.code is TOOMANYREQUESTS:  # busy with other jobs' blobs: later
                        busy_since = busy_since if busy_since is not None else trio.current_time()
                        if trio.current_time() - busy_since <= PREFETCH_WAIT:
                            break
                    waiting.pop(0)
                    failed(digest, error.message)
                    continue
                waiting.pop(0)
                busy_since, progressed = None, True
                running[digest] = trio.current_time()
                _settle(job, running, digest, state, failed)
            if not waiting and not running:
                return
            await trio.sleep(interval)
            for digest, since in list(running.items()):
                try:
                    state = await client.prefetch_status(repository, digest)
                except SwarmregError as error:
                    del running[digest]
                    failed(digest, error.message)
                    continue
                if _settle(job, running, digest, state, failed):
                    progressed = True
                elif trio.current_time() - since > PREFETCH_WAIT:
                    del running[digest]
                    failed(digest, f"not fetched within {PREFETCH_WAIT:g} s")
            interval = POLL_INTERVAL[0] if progressed else min(interval * 2, POLL_INTERVAL[1])


def _settle(job: PreheatJob, running: dict[Digest, float], digest: Digest, state: dict[str, Any],
            failed: Callable[[Digest, str], None]) -> bool:
    """Account for an agent's answer about a running prefetch; True once it has ended."""
    if state.get("state") == PREFETCH_DONE:
        del running[digest]
        job.agent_blobs.done += 1
        return True
    if state.get("state") == PREFETCH_FAILED:
        del running[digest]
        failed(digest, str(state.get("error") or "failed")[:500])
        return True
    return False


class Preheater:
    """The proxy's preheat jobs: at most ``max_running`` at once (TOOMANYREQUESTS beyond), run in
    the proxy service's nursery (``run``); finished ones are kept FINISHED_TTL seconds, the
    latest KEPT_JOBS of them, then forgotten."""

    def __init__(self, index: IndexReader, origin: OriginReader, agents: AgentDirectory | None, *,
                 max_running: int = 4, kept: int = KEPT_JOBS, ttl: float = FINISHED_TTL) -> None:
        self.index = index
        self.origin = origin
        self.agents = agents
        self.max_running = max_running
        self.kept = kept
        self.ttl = ttl
        self._jobs: OrderedDict[str, PreheatJob] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run jobs (in a nursery of the task that runs this, the proxy service's) until ``stop``,
        which cancels those still running."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await stop.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    @property
    def running(self) -> int:
        return sum(job.status == RUNNING for job in self._jobs.values())

    def submit(self, request: JobRequest) -> PreheatJob:
        """Start a job for ``request``; TOOMANYREQUESTS while ``max_running`` jobs run."""
        self._forget()
        if self._nursery is None:
            raise SwarmregError(UNAVAILABLE, "the proxy is stopping")
        if self.running >= self.max_running:
            raise SwarmregError(TOOMANYREQUESTS, f"{self.max_running} preheat jobs are running: retry later",
                                {"limit": self.max_running, "retry_after": 5}, headers={"Retry-After": "5"})
        job = PreheatJob(request)
        self._jobs[job.id] = job
        log.info("preheat job %s: %d image(s)%s%s", job.id, len(job.images),
                 f", platform {request.platform}" if request.platform else "",
                 f", agents {request.agents}" if request.agents is not None else "")
        self._nursery.start_soon(run_job, job, self.index, self.origin, self.agents)
        return job

    def get(self, job_id: str) -> PreheatJob | None:
        """The job, running or finished lately; None if unknown or forgotten."""
        self._forget()
        return self._jobs.get(job_id)

    def _forget(self) -> None:
        now = trio.current_time()
        finished = [job for job in self._jobs.values() if job.finished_at is not None]
        stale = {job.id for job in finished if now - (job.finished_at or now) > self.ttl}
        stale.update(job.id for job in finished[:max(0, len(finished) - self.kept)])
        for job_id in stale:
            del self._jobs[job_id]
