"""The origin service: upload sessions, write-through and lazy fetches from backends."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import trio
from prometheus_client.core import Metric

from swarmreg.authz import ClusterGuard
from swarmreg.backends.base import Backend, BlobStream
from swarmreg.backends.registry import RegistryBackend
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import (
    BACKEND_ERROR,
    BAD_REQUEST,
    BLOB_EXISTS,
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    NAME_INVALID,
    UNSUPPORTED,
    SwarmregError,
    log_failure,
)
from swarmreg.http.serve import serve_http
from swarmreg.metrics import FamiliesCollector, counter, gauge, labelled
from swarmreg.node import Node
from swarmreg.oci.manifest import MAX_MANIFEST_SIZE
from swarmreg.origin.app import create_origin_app
from swarmreg.origin.client import OriginClient
from swarmreg.origin.fetch import receive_blob
from swarmreg.origin.gc import GarbageCollector
from swarmreg.origin.replication import ReplicationQueue, Replicator
from swarmreg.singleflight import Flight, SingleFlight
from swarmreg.store.files import Body, ByteRange, FileBody
from swarmreg.store.growing import GrowingFile
from swarmreg.store.uploads import Upload, UploadManager
from swarmreg.swarm.metainfo import Metainfo, build_metainfo
from swarmreg.swarm.torrent import Torrent
from swarmreg.tls.context import ServerTls
from swarmreg.upstream.names import canonical_registry

log = logging.getLogger(__name__)
T = TypeVar("T")
OpenRange = Callable[[int, int], Awaitable[Body]]


class _Fetch(GrowingFile):
    """A fetch from a backend in progress: its growing file, and the relays offered of it."""

    relays = 0  # metainfo askers told "pending" (they stream the blob from here)


class OriginService:
    """Accepts chunked uploads, keeps every blob in the store, reads through to backends."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = self.config = node.config
        self.store = node.store
        self.backends = node.backends
        self.stop = node.stop
        self.engine = node.require_engine()
        self.idle_timeout = config.http.idle_timeout
        self._registries = frozenset(canonical_registry(registry.name) for registry in config.registries)
        self.uploads = UploadManager(
            config.layout.uploads, self.store,
            ttl=config.origin.upload_ttl, max_size=config.origin.max_upload_size,
            max_sessions=config.origin.max_sessions,
            max_per_namespace=config.origin.max_sessions_per_namespace)
        # Each runs once at a time per blob, in the service's nursery, not the request's:
        # a client that hangs up does not cancel a fetch or a hash others are waiting for.
        # A fetch's state is its growing file: readers stream from it while it arrives.
        self._fetches = SingleFlight[Digest, _Fetch, Metainfo | None](
            "blob fetch", on_error=lambda fetch, error: fetch.fail(error))
        self.relay_limit = config.origin.relay_limit
        self._building = SingleFlight[Digest, None, Metainfo]("metainfo build")
        self._nursery: trio.Nursery | None = None
        self.gc = GarbageCollector(node, self._read_manifest)
        # With [cluster] origins: sends blobs to their other owners, and finds them there on a miss.
        self.replicator: Replicator | None = None
        # Fetches from backends on a miss: (where from, "ok" | "unknown" | "error") -> how many.
        self.fetches: Counter[tuple[str, str]] = Counter()
        node.metrics.add(FamiliesCollector(self._families))
        node.local_origin = self

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the origin API until ``stop`` is set; reports ``{"http": "host:port"}`` once bound."""
        self.uploads.load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._fetches.bind(nursery)
            self._building.bind(nursery)
            self.gc.bind(nursery)
            address: Address = await nursery.start(partial(
                serve_http, create_origin_app(self, ClusterGuard.from_config(self.node.config)),
                self.config.origin.listen, http=self.config.http,
                stop=self.stop, graceful_timeout=self.config.shutdown_timeout, metrics=self.node.metrics,
                tls=ServerTls.cluster(self.config.tls)))
            if (ring := self.node.rings.get("origin")) is not None:
                await nursery.start(self._replicate, ring, address)
            nursery.start_soon(self.uploads.expire_until, self.stop)
            nursery.start_soon(self._seed_cached)
            nursery.start_soon(self.gc.run_schedule, self.stop)
            self.engine.on_failure.append(lambda torrent: nursery.start_soon(self._repair, torrent))
            log.info("origin listening on %s://%s", self.node.tls.http, address)
            task_status.started({"http": str(address), "peer": str(self.engine.address)})

    async def _replicate(self, ring: Ring, address: Address, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the replicator of this origin (at ``address``) in ``ring``, with its own client."""
        config = self.config
        async with OriginClient(ring, tls=self.node.tls.client, secret=config.cluster.secret) as client:
            self.replicator = Replicator(
                ring, client, self.store, ReplicationQueue(config.layout.replication, fsync=config.store.fsync),
                replicas=config.origin.replicas, me=lambda: address, namespace_of=self.node.metainfo.namespace)
            await self.replicator.run(self.stop, task_status=task_status)

    async def start_upload(self, namespace: str, digest: Digest, *, replica: bool = False) -> str:
        """Open an upload session; 409 when the blob is here already (as Kraken does).

        Before that 409 the blob is written to the namespace's backend if the
        backend lacks it, so a client that re-uploads (say, after a failed
        write-through) still gets it stored durably.
        """
        async with self.store.locks.hold(digest):
            if await trio.to_thread.run_sync(self.store.touch, digest):  # committed again: the GC's grace
                backend = self.backends.for_namespace(namespace)
                if (backend is not None and backend.writable
                        and await self._backend_call(backend.stat(namespace, digest)) is None):
                    await self._write_through(backend, namespace, digest)
                # A client's retry after a commit whose obligation could not be recorded (a full
                # disk) records it now; a replica another origin offers is not sent on.
                if self.replicator is not None and not replica:
                    await self.replicator.enqueue(namespace, digest)
                raise SwarmregError(BLOB_EXISTS, detail={"digest": str(digest)})
        return (await self.uploads.create(namespace, digest)).uid

    async def open_session(self, namespace: str) -> Upload:
        """An upload session whose digest comes at the commit (the proxy's Docker pushes)."""
        return await self.uploads.create(namespace)

    def upload(self, uid: str, namespace: str, digest: Digest | None = None) -> Upload:
        """The open session ``uid`` of this namespace (and digest), else BLOB_UPLOAD_UNKNOWN."""
        return self.uploads.get(uid, namespace, digest)

    async def write_upload(self, upload: Upload, where: ByteRange | None, chunks: AsyncIterable[bytes]) -> None:
        """Write a chunk at ``where`` of the session, or append it (``None``)."""
        await self.uploads.write(upload, where, chunks)

    async def cancel_upload(self, upload: Upload) -> None:
        await self.uploads.cancel(upload)

    async def commit_upload(self, upload: Upload, digest: Digest, *, through: bool, replica: bool = False) -> int:
        """Commit the upload into the store and, with ``through``, into the namespace's backend;
        in a ring of origins, the blob is then owed to its other owners (unless it is a ``replica``
        another origin sent), durably before this returns."""
        backend = self._backend(upload.meta.namespace) if through else None
        if backend is not None and not backend.writable:
            # Refused before the commit: nothing changes.
            raise SwarmregError(UNSUPPORTED, f"namespace {upload.meta.namespace!r} is read-only: its blobs come "
                                "from an upstream registry, which swarmreg does not write to",
                                {"namespace": upload.meta.namespace})
        # Under the digest's lock, with the write-through: ordered against the garbage collector's
        # removal of the same blob (a re-upload of a blob it removes lands before or after, whole).
        async with self.store.locks.hold(digest):
            size = await self.uploads.commit(upload, digest)
            if backend is not None:
                await self._write_through(backend, upload.meta.namespace, digest)
            if self.replicator is not None and not replica:
                with trio.CancelScope(shield=True):  # committed: the obligation must be recorded too
                    await self.replicator.enqueue(upload.meta.namespace, digest)
        log.info("committed %s (%d bytes) in %s", digest, size, upload.meta.namespace)
        if size:
            # Hash the torrent now, off the request, so the first agent to ask need not wait.
            # It is seeded once asked for (the tracker asks when an agent wants the blob): a
            # torrent costs libtorrent about 9 KiB for swarm.idle_torrent_timeout, and most
            # blobs pushed are asked for late or never, or travel inline with their metainfo.
            assert self._nursery is not None
            self._nursery.start_soon(self._build_quietly, digest, upload.meta.namespace)
        return size

    def _backend(self, namespace: str) -> Backend:
        backend = self.backends.for_namespace(namespace)
        if backend is None:
            raise SwarmregError(NAME_INVALID, "no storage backend is configured for this namespace",
                                {"namespace": namespace})
        return backend

    async def _write_through(self, backend: Backend, namespace: str, digest: Digest) -> None:
        try:
            await backend.upload_file(namespace, digest, self.store.path(digest))
        except FileNotFoundError:
            raise SwarmregError(BLOB_UNKNOWN, "blob vanished before the backend write") from None
        except SwarmregError:
            raise
        except Exception as error:
            # The backend's own text (paths, hosts) goes to the log, not to the client.
            log.exception("backend write of %s failed", digest)
            raise SwarmregError(BACKEND_ERROR, "blob committed locally, backend write failed",
                                {"digest": str(digest)}) from error

    async def stat(self, namespace: str, digest: Digest, *, local: bool = False) -> int:
        """The blob's size, from the store or (unless ``local``) the namespace's backend."""
        size = self.store.size(digest)
        if size is None and not local and (backend := self.backends.for_namespace(namespace)):
            size = await self._backend_call(backend.stat(namespace, digest))
        if size is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
        return size

    async def serve_blob(self, namespace: str, digest: Digest, *, local: bool = False) -> tuple[int, OpenRange]:
        """The blob's size and how to open a range of it: from the store, or on a miss from the
        fetch from the backend (started or joined), streaming as its bytes arrive; the last
        byte goes out once the blob matched its digest, and a failed fetch cuts the body.
        ``local``: from the store only (BLOB_UNKNOWN on a miss, or while it is being fetched)."""
        size = self.store.size(digest)
        if size is not None and self._fetches.running(digest) is None:
            return size, partial(self.open_blob, namespace, digest)
        if local:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
        fetch = self._start_fetch(namespace, digest).state
        await fetch.started.wait()
        if fetch.error is not None:
            raise fetch.error
        return fetch.size, partial(fetch.body, chunk_size=self.store.chunk_size)

    async def metainfo_or_pending(self, namespace: str, digest: Digest) -> Metainfo | int:
        """The metainfo when the blob is held; else, while it is fetched (started here if need
        be), its size for the first ``origin.relay_limit`` askers, who stream it from this
        origin as it arrives. Later askers wait for the metainfo, as ``metainfo`` does."""
        if self.store.size(digest) is not None and self._fetches.running(digest) is None:
            return await self.metainfo(namespace, digest)
        fetch = self._start_fetch(namespace, digest).state
        if fetch.relays >= self.relay_limit:
            return await self.metainfo(namespace, digest)
        fetch.relays += 1
        await fetch.started.wait()
        if fetch.error is not None:
            raise fetch.error
        if fetch.verified or not fetch.size:  # done already, or the empty blob: no relay
            return await self.metainfo(namespace, digest)
        return fetch.size

    async def open_blob(self, namespace: str, digest: Digest, start: int, end: int) -> FileBody:
        """Bytes [start, end) of a held blob, for streaming."""
        opened = self.store.open_body(digest, start, end)
        if opened is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
        return opened[0]

    def seeder(self) -> tuple[str, int]:
        """The peer id and peer-wire port this origin seeds from."""
        assert self.engine.address is not None, "the engine listens before the origin serves"
        return self.engine.peer_id, self.engine.address.port

    def stats(self, peers: bool) -> dict[str, Any]:
        """The swarm engine's counters, and the last garbage collection's report."""
        replication = {"replication": self.replicator.stats()} if self.replicator is not None else {}
        return {**self.engine.stats(peers), "gc": self.gc.stats(), **replication}

    async def collect_garbage(self, *, dry_run: bool) -> dict[str, Any]:
        """One garbage collection (joined if one of the kind runs); its report."""
        return (await self.gc.collect(dry_run=dry_run)).to_json()

    async def _read_manifest(self, repository: str, digest: Digest) -> bytes | None:
        """A manifest's bytes for the collector's backfill: from the store, else the repository's
        backend; None when neither holds them (or they are too large to be a manifest)."""
        size = self.store.size(digest)
        if size is None:
            backend = self.backends.for_namespace(repository)
            stream = None if backend is None else await self._backend_call(backend.download(repository, digest))
            if stream is None:
                return None
            async with stream:
                data = bytearray()
                async for chunk in stream:
                    data += chunk
                    if len(data) > MAX_MANIFEST_SIZE:
                        return None
                return bytes(data)
        if size > MAX_MANIFEST_SIZE:
            return None
        try:
            return await trio.Path(self.store.path(digest)).read_bytes()
        except FileNotFoundError:
            return None

    def _start_fetch(self, namespace: str, digest: Digest) -> Flight[_Fetch, Metainfo | None]:
        """The blob's fetch from the namespace's backend: the running one, or a new one."""
        return self._fetches.start(digest, partial(self._run_fetch, namespace, digest), _Fetch)

    async def _fetch(self, namespace: str, digest: Digest) -> Metainfo | None:
        """Fetch the blob from the namespace's backend, once however many ask at a time; its
        metainfo (None for the empty blob)."""
        return await self._start_fetch(namespace, digest).wait()

    async def _run_fetch(self, namespace: str, digest: Digest, fetch: _Fetch) -> Metainfo | None:
        """Stream the blob from the backend into the store, checked against its digest and
        hashed into its torrent in the same pass; it is seeded the moment its last byte is
        verified. A failure stores nothing and leaves no temp file. Readers follow ``fetch``."""
        # Under the digest's lock: the garbage collector leaves a blob being fetched alone.
        async with self.store.locks.hold(digest):
            return await self._fetch_locked(namespace, digest, fetch)

    async def _fetch_locked(self, namespace: str, digest: Digest, fetch: _Fetch) -> Metainfo | None:
        if (held := self.store.size(digest)) is not None:  # fetched just before: nothing to do
            fetch.size = held
            fetch.finish(self.store.path(digest))
            return self.node.metainfo.get(digest)
        backend = self.backends.for_namespace(namespace)
        try:
            # The blob's other origins first (their stores only), then the namespace's backend.
            stream: BlobStream | None = None
            source = "another origin"
            if self.replicator is not None:
                stream = await self.replicator.open_from_others(namespace, digest)
            if stream is None:
                stream = None if backend is None else await self._backend_call(backend.download(namespace, digest))
                source = backend.describe(namespace) if backend is not None else namespace
            if stream is None:
                self.fetches[self._fetch_source(backend, namespace, False), "unknown"] += 1
                raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
            async with stream:
                metainfo = await self._backend_call(receive_blob(
                    self.store, digest, stream.size, stream, root_cert=self.node.metainfo.root_cert,
                    piece_lengths=self.node.metainfo.piece_lengths, source=source,
                    growing=fetch))
            log.info("fetched %s (%d bytes) from %s", digest, stream.size, source)
            self.fetches[self._fetch_source(backend, namespace, source == "another origin"), "ok"] += 1
        except SwarmregError as error:
            if error.code is not BLOB_UNKNOWN:
                self.fetches[self._fetch_source(backend, namespace, source == "another origin"), "error"] += 1
            if error.code is DIGEST_INVALID:
                raise SwarmregError(BACKEND_ERROR, f"{source} returned content that does not match the digest",
                                    error.detail) from error
            # A blob no backend holds is an answer (a deleted or collected blob an agent still
            # announces), not a failure to look into.
            log.log(logging.INFO if error.code is BLOB_UNKNOWN else logging.WARNING,
                    "fetching %s for %s failed: %s", digest, namespace, error.message)
            raise
        if metainfo is not None:
            self._cache_metainfo(metainfo, namespace)
            try:
                await self.engine.add(metainfo, self.store.path(digest).parent, seed=True, namespace=namespace)
            except Exception as error:  # the blob is stored all the same; a metainfo request seeds it again
                log_failure(log, f"seeding {digest}", error)
        return metainfo

    def _fetch_source(self, backend: Backend | None, namespace: str, other_origin: bool) -> str:
        """The ``registry`` label of a fetch: the upstream's name (one [[registries]] lists), "origin"
        for another origin, else the backend's kind: the label's values stay few."""
        if other_origin:
            return "origin"
        if isinstance(backend, RegistryBackend) and (located := backend.locate(namespace)) is not None:
            return located[0] if located[0] in self._registries else "other"
        return type(backend).__name__.removesuffix("Backend").lower() if backend is not None else "none"

    def _families(self) -> Iterator[Metric]:
        """The origin's series (docs/metrics.md)."""
        yield gauge("swarmreg_origin_upload_sessions", "Upload sessions open.", len(self.uploads))
        yield counter("swarmreg_gc_runs_total", "Garbage collections run (not dry runs).", self.gc.runs)
        yield counter("swarmreg_gc_freed_bytes_total", "Bytes garbage collections freed.", self.gc.freed_bytes)
        yield labelled("swarmreg_upstream_fetches", "Blobs fetched from a backend on a miss, by upstream registry "
                       "(else the backend's kind, or another origin) and result.", ("registry", "result"),
                       sorted(self.fetches.items()))
        if self.replicator is not None:
            yield counter("swarmreg_replicas_sent_total", "Blobs sent to their other owning origins.",
                          self.replicator.sent)

    @staticmethod
    async def _backend_call(call: Awaitable[T]) -> T:
        """Await a backend's call; its own failures become BACKEND_ERROR (the client is not at fault)."""
        try:
            return await call
        except SwarmregError:
            raise
        except Exception as error:
            log.exception("backend call failed")
            raise SwarmregError(BACKEND_ERROR) from error

    # -- seeding -------------------------------------------------------------------------------

    # Background work: each logs what it fails with and returns; none raises into the
    # service's nursery, where any exception (a full disk, a damaged file) would stop the daemon.

    async def _seed_cached(self) -> None:
        try:
            if seeded := await self.node.seed_held():
                log.info("seeding %d blob(s)", seeded)
        except Exception as error:
            log_failure(log, "seeding the blobs held", error)

    async def _repair(self, torrent: Torrent) -> None:
        """A seeded blob's file failed: drop the torrent, refetch the blob if it is gone, seed again."""
        digest = torrent.metainfo.digest
        log.warning("seeding %s failed (%s): repairing", digest, torrent.error)
        try:
            await self.engine.remove(torrent)
            await self.metainfo(torrent.namespace or self.node.metainfo.namespace(digest), digest)
        except SwarmregError as error:
            log.warning("cannot seed %s again: %s", digest, error.message)
        except Exception as error:
            log_failure(log, f"repairing the seed of {digest}", error)

    async def _build_quietly(self, digest: Digest, namespace: str) -> None:
        try:
            await self._built_metainfo(digest, namespace)
        except Exception as error:
            log_failure(log, f"metainfo for {digest} in {namespace}", error)

    async def metainfo(self, namespace: str, digest: Digest) -> Metainfo:
        """The blob's torrent metainfo, fetching the blob from its backend if needed; the blob is seeded."""
        fetched = None
        if self.store.size(digest) is None:
            fetched = await self._fetch(namespace, digest)
        elif (running := self._fetches.running(digest)) is not None:
            # Held, its torrent still being finished by the fetch: wait for it, not hash it again.
            fetched = await running.wait()
        if self.store.size(digest) == 0:
            raise SwarmregError(BAD_REQUEST, "an empty blob has no torrent: its content is known")
        return await self._seeded_metainfo(digest, namespace, fetched)

    async def _built_metainfo(self, digest: Digest, namespace: str, metainfo: Metainfo | None = None) -> Metainfo:
        """The blob's metainfo (``metainfo`` when the caller has it), from the disk cache, else
        built (once at a time) and cached."""
        metainfo = metainfo or self.node.metainfo.get(digest)
        if metainfo is None:
            metainfo = await self._building.run(digest, partial(self._build_metainfo, digest, namespace))
        return metainfo

    async def _seeded_metainfo(self, digest: Digest, namespace: str, metainfo: Metainfo | None = None) -> Metainfo:
        metainfo = await self._built_metainfo(digest, namespace, metainfo)
        await self.engine.add(metainfo, self.store.path(digest).parent, seed=True, namespace=namespace)
        return metainfo

    async def _build_metainfo(self, digest: Digest, namespace: str) -> Metainfo:
        try:
            metainfo = await trio.to_thread.run_sync(
                build_metainfo, self.store.path(digest), digest, self.node.metainfo.root_cert,
                self.node.metainfo.piece_lengths)
        except FileNotFoundError:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)}) from None
        self._cache_metainfo(metainfo, namespace)
        return metainfo

    def _cache_metainfo(self, metainfo: Metainfo, namespace: str) -> None:
        try:
            self.node.metainfo.put(metainfo, namespace)
        except OSError as error:
            # Not cached (a full disk): seed and serve it all the same; the next ask builds it again.
            log_failure(log, f"caching the metainfo of {metainfo.digest}", error)

