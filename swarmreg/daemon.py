"""The daemon: one Trio process running the enabled roles over one store and one config."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from swarmreg.authz import exposure_error
from swarmreg.backends.router import BackendRouter
from swarmreg.cluster.rings import cluster_rings
from swarmreg.config import Config, ConfigError
from swarmreg.http.client import LimitedResolver
from swarmreg.layout import DataLayout
from swarmreg.malloc import trim_periodically
from swarmreg.metrics import FamiliesCollector, disk_families, swarm_collectors
from swarmreg.node import Node
from swarmreg.store.blobstore import BlobStore
from swarmreg.swarm.engine import SwarmEngine
from swarmreg.swarm.metainfo import MetainfoCache
from swarmreg.tls.context import ClusterTls

if TYPE_CHECKING:
    from swarmreg.proxy.preheat import PreheatJob
    from swarmreg.proxy.wire import Target

log = logging.getLogger(__name__)

ROLES = ("agent", "origin", "tracker", "proxy", "index")
# Roles start in this order: a tracker may use its own daemon's origin, an agent its tracker.
START_ORDER = ("origin", "tracker", "index", "proxy", "agent")
# Roles that move blobs over the peer wire and so need the swarm engine.
SWARM_ROLES = frozenset({"agent", "origin"})
# Extra time past the graceful deadline for services to unwind once cancelled.
_UNWIND_SECONDS = 2.0


def stop_deadline(config: Config) -> float:
    """The longest a graceful stop (SIGTERM) takes: in-flight work's ``shutdown_timeout``, then the
    roles' and the swarm engine's unwinding. A supervisor's stop timeout (systemd's
    TimeoutStopSec, ``podman stop -t``, terminationGracePeriodSeconds) belongs just above it."""
    return config.shutdown_timeout + 2 * _UNWIND_SECONDS


class DaemonError(Exception):
    """The daemon cannot start: a bad role list, or a data directory in use."""


def _service_factories() -> dict[str, Callable[[Node], Any]]:
    from swarmreg.agent.service import AgentService
    from swarmreg.index.service import IndexService
    from swarmreg.origin.service import OriginService
    from swarmreg.proxy.service import ProxyService
    from swarmreg.tracker.service import TrackerService

    return {"agent": AgentService, "origin": OriginService, "tracker": TrackerService,
            "index": IndexService, "proxy": ProxyService}


def parse_roles(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"origin,agent"`` -> ``("origin", "agent")``, refusing unknown and repeated roles."""
    roles = tuple(r.strip() for r in (text.split(",") if isinstance(text, str) else text) if r.strip())
    if not roles:
        raise DaemonError("no roles given: use --roles with some of " + ",".join(ROLES))
    for role in roles:
        if role not in ROLES:
            raise DaemonError(f"unknown role {role!r}: the roles are {', '.join(ROLES)}")
    if len(set(roles)) != len(roles):
        raise DaemonError(f"a role is listed twice: {','.join(roles)}")
    return roles


class _DataDirLock:
    """An exclusive lock on the data directory, so two daemons never share one."""

    def __init__(self, layout: DataLayout) -> None:
        self.path = layout.lock
        self.fd = -1

    def __enter__(self) -> _DataDirLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DaemonError(f"data directory {self.path.parent} is in use by another daemon") from None
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# An image list for --preload-images is at most this long.
MAX_PRELOAD_FILE = 16 << 20


def read_preload(path: str | os.PathLike[str], config: Config, roles: Sequence[str]) -> list[Target]:
    """The checked references of a ``--preload-images`` file (swarmreg.proxy.wire.Target); DaemonError
    when the daemon cannot preload (neither the proxy role nor the index and origin roles), or the
    file cannot be read or has a malformed line."""
    from swarmreg.proxy.wire import read_image_list

    if "proxy" not in roles and not {"index", "origin"} <= set(roles):
        raise DaemonError("--preload-images needs the proxy role, or the index and origin roles, in this daemon "
                          f"(its roles: {','.join(roles)})")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PRELOAD_FILE + 1)
    except OSError as error:
        raise DaemonError(f"--preload-images: cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_PRELOAD_FILE:
        raise DaemonError(f"--preload-images: {path} is over {MAX_PRELOAD_FILE >> 20} MiB")
    try:
        return read_image_list(data.decode("utf-8"), config.default_registry, where=str(path))
    except UnicodeDecodeError:
        raise DaemonError(f"--preload-images: {path} is not UTF-8 text") from None
    except ValueError as error:
        raise DaemonError(f"--preload-images: {error}") from None


class Daemon:
    """Starts each role as a service, reports their addresses, and stops them gracefully."""

    def __init__(self, config: Config, roles: Sequence[str], *,
                 ready_file: str | os.PathLike[str] | None = None,
                 preload_images: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.roles = parse_roles(roles)
        cluster = config.cluster
        needs = [("tracker", "origin", bool(config.tracker.origins or cluster.origins),
                  "cluster.origins or tracker.origins"),
                 ("proxy", "origin", config.proxy.origin is not None or cluster.origins != (),
                  "cluster.origins or proxy.origin"),
                 ("proxy", "index", config.proxy.index is not None or cluster.indexes != (),
                  "cluster.indexes or proxy.index"),
                 ("index", "origin", not config.index.replicate or config.index.origin is not None
                  or cluster.origins != (), "cluster.origins or index.origin to read what [[index.replicate]] sends")]
        for role, other, configured, key in needs:
            if role in self.roles and not configured and other not in self.roles:
                raise DaemonError(f"the {role} needs {key}, or the {other} role in the same daemon")
        # Before anything binds: internal ports open to the network must check who writes.
        if (exposed := exposure_error(config, self.roles)) is not None:
            raise DaemonError(exposed)
        self.ready_file = Path(ready_file) if ready_file is not None else None
        # Read and checked now: a bad list stops the daemon before it binds anything.
        self.preload = read_preload(preload_images, config, self.roles) if preload_images is not None else None
        self.preload_job: PreheatJob | None = None  # the preload's, once it started
        self.stop = trio.Event()
        self.stopped = trio.Event()
        self.node: Node | None = None
        self._services: trio.CancelScope | None = None

    async def run(self, *, handle_signals: bool = True,
                  task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop`` is set (SIGINT/SIGTERM set it when ``handle_signals``).

        Reports the ready document (every bound address) once all roles listen.
        In-flight requests then get ``shutdown_timeout`` seconds; a second signal
        cancels them at once.
        """
        layout = self.config.layout
        data_dir = layout.root
        data_dir.mkdir(parents=True, exist_ok=True)
        trio.socket.set_custom_hostname_resolver(LimitedResolver())  # lookups cannot take the file I/O threads
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        with _DataDirLock(layout):
            store = BlobStore(data_dir, fsync=self.config.store.fsync, chunk_size=self.config.store.chunk_size)
            store.prepare()
            tls = ClusterTls.from_config(self.config.tls)
            if tls.enabled and tls.peer is None and SWARM_ROLES & set(self.roles):
                raise ConfigError("tls.peer_cert: the agent and origin roles need a peer-wire certificate "
                                  "with [tls] (swarmreg certs issue makes one)")
            metainfo = MetainfoCache(layout.metainfo, tls.peer.root_cert if tls.peer else b"",
                                     {int(at): int(length) for at, length in self.config.origin.piece_lengths.items()})
            metainfo.prepare()
            backends = BackendRouter.from_config(self.config.backends, data_dir, registries=self.config.registries,
                                                 air_gapped=self.config.air_gapped)
            node = self.node = Node(self.config, store, backends, metainfo, tls=tls, stop=self.stop)
            try:
                async with trio.open_nursery() as watcher:
                    if handle_signals:
                        await watcher.start(self._watch_signals)
                    # Cancelled with the watcher, after every role has stopped.
                    watcher.start_soon(trim_periodically, self.config.malloc_trim_interval)
                    await watcher.start(node.metrics.measure_lag)
                    node.metrics.add(FamiliesCollector(partial(disk_families, str(data_dir))))
                    # The rings (membership and health checks) outlive the roles: their clients
                    # use them to the end.
                    node.rings = cluster_rings(self.config.cluster, tls.client)
                    for ring in node.rings.values():
                        await watcher.start(ring.run)
                    async with trio.open_nursery() as engine_nursery:
                        if SWARM_ROLES & set(self.roles):
                            node.engine = SwarmEngine(self.config.swarm, tls.peer)
                            swarm_collectors(node.metrics, node.engine)
                            await engine_nursery.start(node.engine.run)
                        async with trio.open_nursery() as services:
                            self._services = services.cancel_scope
                            ready = await self._start_services(services, node)
                            task_status.started(ready)
                            if self.preload is not None:  # the daemon serves while it runs
                                services.start_soon(self._preload, node)
                            await self.stop.wait()
                            log.info("stopping: in-flight requests get %g s", self.config.shutdown_timeout)
                            services.cancel_scope.deadline = (
                                trio.current_time() + self.config.shutdown_timeout + _UNWIND_SECONDS)
                        # The engine outlives the roles: their last requests may still use it.
                        if node.engine is not None:
                            node.engine.close()
                        engine_nursery.cancel_scope.deadline = trio.current_time() + _UNWIND_SECONDS
                    watcher.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await node.backends.aclose()
                if self.ready_file is not None:
                    self.ready_file.unlink(missing_ok=True)
                self.stopped.set()
        log.info("stopped")

    async def _start_services(self, nursery: trio.Nursery, node: Node) -> dict[str, Any]:
        factories = _service_factories()
        bound = node.bound
        for role in sorted(self.roles, key=START_ORDER.index):
            bound[role] = await nursery.start(factories[role](node).run)
        ready = {"pid": os.getpid(), "data_dir": self.config.data_dir, "roles": bound}
        if node.engine is not None:
            ready["peer"] = str(node.engine.address)
        if self.ready_file is not None:
            temp = self.ready_file.with_name(self.ready_file.name + ".tmp")
            temp.write_text(json.dumps(ready, indent=2))
            os.replace(temp, self.ready_file)
        log.info("ready: %s", json.dumps(bound))
        return ready

    async def _preload(self, node: Node) -> None:
        """The preheat job of --preload-images, through this daemon's index and origin (or those its
        proxy uses), logged as it goes. Background work: it logs what fails and never raises."""
        from swarmreg.cluster.ring import Ring
        from swarmreg.index.client import IndexClient
        from swarmreg.origin.client import OriginClient
        from swarmreg.proxy.preheat import ImageResult, PreheatJob, run_job
        from swarmreg.proxy.wire import JobRequest

        def ring(role: str) -> Ring:
            configured = getattr(self.config.proxy, role) if "proxy" in self.roles else None
            return node.ring(role, configured)

        def logged(job: PreheatJob, image: ImageResult) -> None:
            done = sum(i.status in ("done", "failed") for i in job.images)
            if image.status == "done":
                log.info("preload %d/%d: %s loaded (%s)", done, len(job.images), image.target.text, image.digest)
            else:
                log.warning("preload %d/%d: %s failed: %s", done, len(job.images), image.target.text, image.error)

        assert self.preload is not None
        job = self.preload_job = PreheatJob(JobRequest(tuple(self.preload)))
        log.info("preloading %d image(s)", len(job.images))
        tls, secret = node.tls.client, self.config.cluster.secret
        try:
            async with IndexClient(ring("index"), tls=tls, secret=secret) as index, \
                    OriginClient(ring("origin"), tls=tls, secret=secret) as origin:
                await run_job(job, index, origin, on_image=logged)
        except Exception:  # never takes the daemon down
            log.exception("preloading images failed")
            return
        (log.info if job.status == "done" else log.warning)(
            "preload %s: %d of %d image(s) loaded, %d blob(s) (%d bytes) seeded, %d error(s)", job.status,
            sum(i.status == "done" for i in job.images), len(job.images), job.blobs.done, job.bytes_done,
            len(job.errors) + job.errors_dropped)

    async def _watch_signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not self.stop.is_set():
                    log.info("received %s", signal.Signals(signum).name)
                    self.stop.set()
                elif self._services is not None:
                    log.warning("received %s again: cancelling in-flight work", signal.Signals(signum).name)
                    self._services.cancel()
