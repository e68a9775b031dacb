"""The herd's online garbage collector, in the origin role (docs/gc.md argues why it is safe).

A collection marks at the index (one transaction: stale blob links removed, the live set read),
then sweeps what the origin holds: every committed blob of its store and of each writable
backend that the mark did not find live and that was committed before the grace period began
(or, when a manifest's delete released it, before the mark began) is removed, under
the digest's lock (swarmreg.store.locks) that every commit path takes too, with its torrent, its
cached metainfo and the trackers' records of it. One collection runs at a time: a request joins
the running one when it asks for the same (a dry run or not), else waits for it to end and then
runs its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import trio

from swarmreg.backends.base import Backend
from swarmreg.config import Address
from swarmreg.digest import ALGORITHMS, Digest
from swarmreg.errors import UNAVAILABLE, SwarmregError, log_failure
from swarmreg.gc import GcReport
from swarmreg.index.gc_client import IndexMarker
from swarmreg.node import Node
from swarmreg.oci.manifest import parse_manifest
from swarmreg.singleflight import SingleFlight
from swarmreg.store.blobstore import BlobStore
from swarmreg.swarm.torrent import Torrent
from swarmreg.tracker.client import forget_blobs

log = logging.getLogger(__name__)

# Reads a manifest's bytes (from the store, else the repository's backend); None when neither has it.
ReadManifest = Callable[[str, Digest], Awaitable[bytes | None]]
# Legacy manifests asked for per page of the backfill.
BACKFILL_PAGE = 500
# The longest the sweep works between two checkpoints (seconds): a request served meanwhile
# needs dozens of scheduler rounds, and waits this long in each.
YIELD_AFTER = 0.0002


class GarbageCollector:
    """Collects the garbage of one origin: its store, its writable backends, its torrents."""

    def __init__(self, node: Node, read_manifest: ReadManifest) -> None:
        self.node = node
        self.config = node.config.gc
        self.read_manifest = read_manifest
        self.last: GcReport | None = None
        self.runs = 0  # collections that removed what they found (not dry runs), failed or not
        self.freed_bytes = 0  # bytes they freed
        self._flights = SingleFlight[bool, None, GcReport]("garbage collection")
        self._one_at_a_time = trio.Lock()

    def bind(self, nursery: trio.Nursery) -> None:
        """Run collections in ``nursery`` (the origin service's): a client that hangs up does not stop one."""
        self._flights.bind(nursery)

    async def collect(self, *, dry_run: bool) -> GcReport:
        """One collection's report: the running one's of the same kind, or a new one's."""
        return await self._flights.run(dry_run, partial(self._serialized, dry_run))

    async def run_schedule(self, stop: trio.Event) -> None:
        """A collection every ``gc.interval`` seconds until ``stop`` (none when it is 0); background
        work: a failed collection is logged and the next one comes on time."""
        if not self.config.interval:
            return
        if self.config.grace < 60:
            log.warning("gc.grace is %g s: a push slower than that is refused (MANIFEST_BLOB_UNKNOWN) when a "
                        "scheduled collection runs during it", self.config.grace)
        while True:
            with trio.move_on_after(self.config.interval):
                await stop.wait()
            if stop.is_set():
                return
            try:
                await self.collect(dry_run=False)
            except Exception as error:
                log_failure(log, "the scheduled garbage collection", error)

    def stats(self) -> dict[str, object] | None:
        """The last collection's report, for /stats."""
        return None if self.last is None else self.last.to_json()

    async def _serialized(self, dry_run: bool) -> GcReport:
        async with self._one_at_a_time:
            report = GcReport(dry_run=dry_run, grace=self.config.grace,
                              started=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
            try:
                await self._run(report)
            except SwarmregError as error:
                log.warning("garbage collection failed: %s", error.message)
                raise
            finally:
                if not dry_run:
                    self.runs += 1
                    self.freed_bytes += report.bytes_freed
            log.info("%s", report.summary())
            for message in report.errors[:10]:
                log.warning("garbage collection: %s", message)
            self.last = report
            return report

    # -- mark ------------------------------------------------------------------------------------

    def _index(self) -> Address:
        """The index to mark from: the first live one of the ring (the one every client writes to;
        several indexes must share their state, or a mark from one misses the others' links)."""
        if "index" in self.node.rings or self.node.config.origin.index is not None or "index" in self.node.bound:
            members = self.node.ring("index", self.node.config.origin.index).order()
            if members:
                return members[0]
        raise SwarmregError(UNAVAILABLE, "garbage collection needs an index: set cluster.indexes or origin.index, "
                            "or run the index role in the origin's daemon")

    async def _run(self, report: GcReport) -> None:
        # Taken before the mark: a blob committed since is younger than this, and is kept.
        cutoff = time.time() - self.config.grace
        began = trio.current_time()
        tls, secret = self.node.tls.client, self.node.config.cluster.secret
        async with IndexMarker(self._index(), tls=tls, secret=secret) as index:
            if await self._backfill(index, report):
                report.error("the references of some manifests recorded before index schema 2 cannot be read: "
                             "nothing is marked or swept")
                report.mark_seconds = trio.current_time() - began
                return
            # A blob a manifest's delete released goes if committed before this: a push storing it
            # noted that at the index before its commit (the mark then holds it live), or commits
            # after this, renewing the file (docs/gc.md).
            marked_at = time.time()
            marked = await index.mark(self.config.grace, dry_run=report.dry_run)
        report.marked, report.links_removed = len(marked.live), marked.links_removed
        if marked.links_kept:
            report.error(f"the index removed no stale link ({marked.links_kept}): their blobs are kept; "
                         "collect again once it has room")
        report.mark_seconds = trio.current_time() - began
        began = trio.current_time()
        removed = await self._sweep(marked.live, marked.released, cutoff, marked_at, report)
        if removed and not report.dry_run:
            await self._tell_trackers(removed, report)
        report.sweep_seconds = trio.current_time() - began

    async def _backfill(self, index: IndexMarker, report: GcReport) -> int:
        """Record the references of manifests the index recorded without them, read from their
        bytes; how many could not be read (the mark is refused while any is unknown)."""
        unreadable, last = 0, ""
        while page := await index.unknown_manifests(last, BACKFILL_PAGE):
            for entry in page:
                repository, text = entry["repository"], entry["digest"]
                last = f"{repository}@{text}"
                try:
                    digest = Digest.parse(text)
                    data = await self.read_manifest(repository, digest)
                    if data is None:
                        raise SwarmregError(UNAVAILABLE, "its bytes are not held")
                    manifest = parse_manifest(data, entry["media_type"], algorithm=digest.algorithm)
                    await index.record_references(repository, digest, manifest.blobs, manifest.children)
                except SwarmregError as error:
                    unreadable += 1
                    report.error(f"manifest {text} of {repository}: {error.message}")
                    continue
                report.backfilled += 1
        if report.backfilled:
            log.info("read the references of %d manifest(s) recorded before index schema 2", report.backfilled)
        return unreadable

    # -- sweep -----------------------------------------------------------------------------------

    def _writable_backends(self) -> list[Backend]:
        backends: dict[int, Backend] = {}
        for _pattern, backend in self.node.backends.routes:
            if backend.writable:
                backends.setdefault(id(backend), backend)
        return list(backends.values())

    async def _sweep(self, live: frozenset[str], released: dict[str, float], cutoff: float, marked_at: float,
                     report: GcReport) -> list[Digest]:
        """Remove (or, dry, count) what the mark did not find live and is older than ``cutoff``
        (or, if a delete released it, than ``marked_at``); the digests removed."""
        store = self.node.store
        backends = self._writable_backends()
        held = dict.fromkeys(await _unmarked(store, live))
        for backend in list(backends):
            try:
                async for digest in backend.list(""):  # content-addressed: every namespace's blobs
                    if str(digest) not in live:
                        held[digest] = None
            except Exception as error:
                backends.remove(backend)
                report.error(f"listing {backend.describe('')} failed: {_reason(error)}; it is not swept")
        report.unreferenced = len(held)
        torrents = {torrent.metainfo.digest: torrent for torrent in self.node.require_engine()}
        removed: list[Digest] = []
        worked = time.perf_counter()
        for digest in held:
            if time.perf_counter() - worked > YIELD_AFTER:
                await trio.sleep(0)
                worked = time.perf_counter()
            try:
                early = str(digest) in released
                if await self._sweep_one(digest, max(cutoff, marked_at) if early else cutoff, backends,
                                         torrents.get(digest), report, early=early):
                    removed.append(digest)
            except Exception as error:  # this blob stays; the others are still swept
                report.error(f"sweeping {digest}: {_reason(error)}")
        return removed

    async def _sweep_one(self, digest: Digest, cutoff: float, backends: list[Backend], torrent: Torrent | None,
                         report: GcReport, *, early: bool = False) -> bool:
        """Remove the blob everywhere if every copy is older than ``cutoff`` (``early``: sooner
        than the grace period, for a delete released it); under its lock, so a commit renews it
        wholly before (and it stays) or after (and brings it back)."""
        store = self.node.store
        with store.locks.try_hold(digest) as held:
            if not held:  # an upload commits it or a fetch writes it right now
                report.kept_busy += 1
                return False
            # A stat and an unlink or two per blob, in the event loop as the store's other
            # lookups are: a thread per blob would cost more than the calls (YIELD_AFTER bounds a stall).
            stat = store.stat(digest)
            ages = [] if stat is None else [stat.st_mtime]
            size = 0 if stat is None else stat.st_size
            holders = []
            for backend in backends:
                modified = await backend.modified("", digest)
                if modified is not None:
                    ages.append(modified)
                    holders.append(backend)
                    if stat is None:
                        size = await backend.stat("", digest) or 0
            if not ages:
                return False  # gone meanwhile
            if max(ages) >= cutoff:
                report.kept_young += 1
                return False
            report.swept += 1
            report.swept_released += early
            report.bytes_freed += size
            report.backend_copies += len(holders)
            if report.dry_run:
                return False
            if torrent is not None:  # stops seeding (a peer mid-download fetches it elsewhere or fails)
                await self.node.require_engine().remove(torrent, warn=False)
                report.torrents_removed += 1
            # The metainfo first: a process killed midway leaves a blob without it (the next
            # collection removes it), never a metainfo file that no collection would look at.
            self.node.metainfo.delete(digest)
            # Unlinked, not truncated: a response streaming it keeps its descriptor and finishes.
            await store.delete(digest)
            for backend in holders:
                await backend.delete("", digest)
            return True

    async def _tell_trackers(self, removed: list[Digest], report: GcReport) -> None:
        """The trackers forget the removed blobs' metainfo and this origin as their seeder."""
        trackers = list(self.node.config.origin.trackers)
        if (ring := self.node.rings.get("tracker")) is not None:  # every member holds metainfo of its own
            trackers = [*ring.members, *trackers]
        if "tracker" in self.node.bound:
            trackers.insert(0, Address.parse(self.node.bound["tracker"]["ws"]))
        for address in dict.fromkeys(trackers):
            try:
                await forget_blobs(address, removed, tls=self.node.tls.client, secret=self.node.config.cluster.secret)
                report.trackers_told += 1
            except SwarmregError as error:
                report.error(f"telling the tracker {address}: {error.message}")


async def _unmarked(store: BlobStore, live: frozenset[str]) -> list[Digest]:
    """The store's blobs that are not live, listed a shard directory at a time (each in a worker
    thread, then checked here): a whole store in one go would hold the interpreter for a while."""
    found = []
    for algorithm in ALGORITHMS:
        directory = store.tree.algorithm_dir(algorithm)
        for shard in await trio.to_thread.run_sync(_names, directory):
            for name in await trio.to_thread.run_sync(_names, directory / shard):
                if f"{algorithm}:{name}" not in live:
                    try:
                        found.append(Digest(name, algorithm))
                    except SwarmregError:  # not a blob's name: not ours to remove
                        log.warning("garbage collection: %s/%s is not a blob, left alone", algorithm, shard)
    return found


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _reason(error: Exception) -> str:
    """An error's reason for the report (a SwarmregError's message; else its type and errno, never a path)."""
    if isinstance(error, SwarmregError):
        return error.message
    if isinstance(error, OSError):
        return f"{type(error).__name__} {error.strerror or ''}".strip()
    log.exception("garbage collection: unexpected error")
    return type(error).__name__
