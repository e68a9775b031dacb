"""The index's side of pull-through caching: tags and manifests of upstream repositories.

An upstream image lives under the repository ``<registry>/<repo>`` (``127.0.0.1:5000/team/app``,
``docker.io/library/nginx``). When the index lacks a tag or manifest of such a repository, or
a cached tag is due (``tag_ttl``, ``always_pull_latest``), it asks the upstream and records
what it gets exactly as a push would have: the manifest's bytes at the origin (where agents get
them through the swarm, like any blob), its record, its blob links, its tag. A manifest list or
OCI index is kept whole: by its tag, by its digest and with every child manifest recorded by
digest, so a host that pulls a child by digest and later the tag by name is served from the
cache with the upstream gone (the ociregistry README's "gotcha").

Layer bytes are not fetched here: the origin fetches them through its upstream storage backend
when the tracker first asks for a blob's metainfo.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar

import trio

from swarmreg.config import Config
from swarmreg.digest import Digest
from swarmreg.errors import (
    BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    UPSTREAM_ERROR,
    UPSTREAM_UNAVAILABLE,
    ErrorCode,
    SwarmregError,
)
from swarmreg.index.store import IndexStore, ManifestRecord
from swarmreg.index.wire import CLIENT_TIMEOUT
from swarmreg.oci.manifest import Manifest, parse_manifest
from swarmreg.singleflight import SingleFlight
from swarmreg.store.blobstore import BlobStore
from swarmreg.upstream.client import Manifest as UpstreamManifest
from swarmreg.upstream.client import Upstreams
from swarmreg.upstream.names import split_upstream

log = logging.getLogger(__name__)
T = TypeVar("T")

# An index may list indexes; deeper nesting than this is refused (no upstream needs it).
MAX_DEPTH = 2
# Child manifests one index may list: each is a GET at the upstream (real ones list a few dozen).
MAX_CHILDREN = 256
# An upstream's "no such tag/manifest/blob" is believed this many seconds, for at most this many
# names: a client repeating a miss is answered from memory, not with another upstream request.
MISSING_TTL = 10.0
MAX_MISSING = 10_000
# Seconds a due cached tag waits for its upstream before it is served as it is (stale_if_error).
STALE_WAIT = 10.0
# Seconds a cached tag is served as it is, without asking, after its upstream failed or did not
# answer: otherwise every pull in an outage would wait STALE_WAIT again.
STALE_RETRY = 30.0
# Seconds an uncached name waits for its upstream before the index answers UPSTREAM_UNAVAILABLE
# naming it: an upstream that hangs would outlast read_timeout (60 s) and the index's clients'
# own timeout, whose error would blame the index. The lookup runs on in the service's nursery;
# a client that asks again gets its result.
UPSTREAM_WAIT = CLIENT_TIMEOUT - 10.0
# Upstream failures a cached tag is served through (stale-if-error); a 404 is an answer.
_UPSTREAM_FAILURES = frozenset({UPSTREAM_UNAVAILABLE, UPSTREAM_ERROR})


class ManifestSink(Protocol):
    """Where a fetched manifest's bytes are kept: the origin, through its client (an OriginClient)
    or, in the origin's own daemon, its blob store (StoreSink)."""

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None: ...


class StoreSink:
    """The blob store of a daemon that runs the origin role too: the bytes go straight in (no
    HTTP hop, no origin write credential), and the origin seeds them when first asked."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None:
        # A commit as the origin's: under the digest's lock, renewing a blob held already, so the
        # garbage collector cannot remove it before the manifest's record lands (docs/gc.md).
        async with self.store.locks.hold(digest):
            if not await trio.to_thread.run_sync(self.store.touch, digest):
                await self.store.write(digest, _once(data))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class PullThrough:
    """Reads of the index that fall through to upstream registries for upstream repositories.

    ``sink`` is a callable giving the ManifestSink (so the index can start before its origin
    client exists); every fetch runs once per key in the index service's nursery (``bind``).
    """

    def __init__(self, store: IndexStore, upstreams: Upstreams, sink: Callable[[], ManifestSink], *,
                 air_gapped: bool = False, always_pull_latest: bool = False, tag_ttl: float = 300.0,
                 stale_if_error: bool = True) -> None:
        self.store = store
        self.upstreams = upstreams
        self.sink = sink
        self.air_gapped = air_gapped
        self.always_pull_latest = always_pull_latest
        self.tag_ttl = tag_ttl
        self.stale_if_error = stale_if_error
        # When each cached upstream tag was last resolved (trio's clock): in memory, so after a
        # restart every tag is resolved once more, then cached again.
        self._checked: dict[tuple[str, str], float] = {}
        self._failed: dict[tuple[str, str], float] = {}  # when a due cached tag was last served stale
        self._missing: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._tags = SingleFlight[tuple[str, str], None, Digest | None]("upstream tag resolution")
        self._manifests = SingleFlight[tuple[str, Digest], None, ManifestRecord | None]("upstream manifest fetch")
        self._blobs = SingleFlight[tuple[str, Digest], None, int | None]("upstream blob lookup")

    @classmethod
    def from_config(cls, config: Config, store: IndexStore, upstreams: Upstreams,
                    sink: Callable[[], ManifestSink]) -> PullThrough:
        """The pull-through of the configuration's modes (air_gapped, always_pull_latest, ...)."""
        return cls(store, upstreams, sink, air_gapped=config.air_gapped,
                   always_pull_latest=config.always_pull_latest, tag_ttl=config.tag_ttl,
                   stale_if_error=config.stale_if_error)

    def bind(self, nursery: trio.Nursery) -> None:
        """Run upstream fetches in ``nursery`` (the index service's)."""
        for flights in (self._tags, self._manifests, self._blobs):
            flights.bind(nursery)

    # -- the reads the index app serves -------------------------------------------------------

    async def get_tag(self, repository: str, tag: str) -> Digest | None:
        """The digest ``tag`` points at: the cached one, or the upstream's when none is cached or
        the cached one is due; the cached one again when the upstream fails (stale-if-error)."""
        cached = await self.store.get_tag(repository, tag)
        if split_upstream(repository) is None or self.air_gapped:
            return cached
        if cached is not None and not self._due(repository, tag):
            return cached
        resolve = partial(self._once_known, (repository, tag), partial(
            self._tags.run, (repository, tag), partial(self._resolve_tag, repository, tag)))
        try:
            if cached is None or not self.stale_if_error:
                return await _bounded(repository, resolve)
            # An upstream that hangs would outlast the hops' timeouts (read_timeout is 60 s, the
            # agent's and proxy's requests to the index 30 s): wait STALE_WAIT, then serve the cached
            # tag; the resolution runs on in the service's nursery and updates it if it succeeds.
            with trio.move_on_after(STALE_WAIT):
                return await resolve()
            log.warning("serving the cached %s:%s (%s): the upstream has not answered within %g s",
                        repository, tag, cached, STALE_WAIT)
            self._failed[(repository, tag)] = trio.current_time()
            return cached
        except SwarmregError as error:
            if cached is None or not self.stale_if_error or error.code not in _UPSTREAM_FAILURES:
                raise
            log.warning("serving the cached %s:%s (%s): the upstream failed: %s",
                        repository, tag, cached, error.message)
            self._failed[(repository, tag)] = trio.current_time()
            return cached

    async def get_manifest(self, repository: str, digest: Digest) -> ManifestRecord | None:
        """The manifest's record, fetched from the upstream on a miss."""
        record = await self.store.get_manifest(repository, digest)
        if record is not None or split_upstream(repository) is None or self.air_gapped:
            return record
        return await _bounded(repository, partial(self._once_known, (repository, str(digest)), partial(
            self._manifests.run, (repository, digest), partial(self._fetch_manifest, repository, digest))))

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The linked blob's size; a blob of an upstream repository that no fetched manifest
        linked (a pull by digest alone) is looked up at the upstream and linked."""
        size = await self.store.blob_size(repository, digest)
        if size is not None or split_upstream(repository) is None or self.air_gapped:
            return size
        return await _bounded(repository, partial(self._once_known, (repository, f"blob {digest}"), partial(
            self._blobs.run, (repository, digest), partial(self._link_upstream_blob, repository, digest))))

    # -- resolution -----------------------------------------------------------------------------

    async def _once_known(self, key: tuple[str, str], lookup: Callable[[], Awaitable[T | None]]) -> T | None:
        """``lookup()``, unless the upstream said ``key`` is missing less than MISSING_TTL ago
        (then None, without a request); a new "missing" is remembered."""
        now = trio.current_time()
        said = self._missing.get(key)
        if said is not None and now - said < MISSING_TTL:
            return None
        found = await lookup()
        if found is None:
            self._missing[key] = now
            self._missing.move_to_end(key)
            while len(self._missing) > MAX_MISSING:
                self._missing.popitem(last=False)
        else:
            self._missing.pop(key, None)
        return found

    def _due(self, repository: str, tag: str) -> bool:
        now = trio.current_time()
        failed = self._failed.get((repository, tag))
        if failed is not None and now - failed < STALE_RETRY:
            return False
        if self.always_pull_latest and tag == "latest":
            return True
        checked = self._checked.get((repository, tag))
        return checked is None or now - checked >= self.tag_ttl

    async def _resolve_tag(self, repository: str, tag: str) -> Digest | None:
        registry, name = _upstream(repository)
        client = self.upstreams.get(registry)
        try:
            head = await client.head_manifest(name, tag)
            digest = _digest(head.digest, registry) if head.digest else None
            if digest is None or await self.store.get_manifest(repository, digest) is None:
                fetched = await client.get_manifest(name, str(digest) if digest else tag)
                digest = (await self._ingest(repository, fetched, 0)).digest
        except SwarmregError as error:
            if error.code is MANIFEST_UNKNOWN:  # the upstream's answer: no such tag (now)
                return None
            raise
        await self.store.put_tag(repository, tag, digest)
        self._checked[(repository, tag)] = trio.current_time()
        self._failed.pop((repository, tag), None)
        log.info("resolved %s:%s at %s: %s", repository, tag, registry, digest)
        return digest

    async def _fetch_manifest(self, repository: str, digest: Digest) -> ManifestRecord | None:
        registry, name = _upstream(repository)
        fetched = await _unless(MANIFEST_UNKNOWN, self.upstreams.get(registry).get_manifest(name, str(digest)))
        if fetched is None:
            return None
        await self._ingest(repository, fetched, 0)
        return await self.store.get_manifest(repository, digest)

    async def _link_upstream_blob(self, repository: str, digest: Digest) -> int | None:
        registry, name = _upstream(repository)
        size = await _unless(BLOB_UNKNOWN, self.upstreams.get(registry).blob_size(name, str(digest)))
        if size is not None:
            await self.store.link_blob(repository, digest, size)
        return size

    async def _ingest(self, repository: str, fetched: UpstreamManifest, depth: int) -> Manifest:
        """Record an upstream manifest as a push would: children (of an index) first, then blob
        links, the bytes at the origin, and last the record that makes it visible."""
        registry, name = _upstream(repository)
        try:
            manifest = parse_manifest(fetched.data, fetched.media_type or None,
                                      algorithm=Digest.parse(fetched.digest).algorithm)
        except SwarmregError as error:
            raise SwarmregError(UPSTREAM_ERROR, f"upstream {registry} sent an invalid manifest for {name}: "
                                f"{error.message}", {"registry": registry, "digest": fetched.digest}) from None
        if manifest.children:
            if len(manifest.children) > MAX_CHILDREN:
                raise SwarmregError(UPSTREAM_ERROR, f"upstream {registry}: {name} lists more than {MAX_CHILDREN} "
                                    "manifests", {"registry": registry, "digest": str(manifest.digest)})
            if depth >= MAX_DEPTH:
                raise SwarmregError(UPSTREAM_ERROR, f"upstream {registry}: {name} nests indexes too deep",
                                    {"registry": registry, "digest": str(manifest.digest)})
            for child in manifest.children:  # one at a time: a few small GETs, no exception groups
                await self._ingest_child(repository, child, depth + 1)
        for blob in (manifest.config, *manifest.layers):
            if blob is not None and not blob.external:
                await self.store.link_blob(repository, blob.digest, blob.size)
        await self.sink().upload_bytes(repository, manifest.digest, fetched.data, through=False)
        await self.store.put_manifest(repository, manifest.digest, media_type=manifest.media_type,
                                      size=manifest.size, artifact_type=manifest.artifact_type,
                                      subject=manifest.subject, annotations=manifest.annotations,
                                      blobs=manifest.blobs, children=manifest.children)
        return manifest

    async def _ingest_child(self, repository: str, digest: Digest, depth: int) -> None:
        if await self.store.get_manifest(repository, digest) is not None:
            return
        registry, name = _upstream(repository)
        await self._ingest(repository, await self.upstreams.get(registry).get_manifest(name, str(digest)), depth)


async def _unless(missing: ErrorCode, call: Awaitable[T]) -> T | None:
    """``call``'s result; None when the upstream answers ``missing`` (its 404: an answer, not a failure)."""
    try:
        return await call
    except SwarmregError as error:
        if error.code is missing:
            return None
        raise


async def _bounded(repository: str, lookup: Callable[[], Awaitable[T]]) -> T:
    """``lookup()`` (a flight that runs on in the service's nursery), or UPSTREAM_UNAVAILABLE
    naming the upstream once it has taken UPSTREAM_WAIT."""
    with trio.move_on_after(UPSTREAM_WAIT):
        return await lookup()
    registry, _ = _upstream(repository)
    log.warning("upstream %s has not answered for %s within %g s", registry, repository, UPSTREAM_WAIT)
    raise SwarmregError(UPSTREAM_UNAVAILABLE, f"upstream {registry} has not answered within {UPSTREAM_WAIT:g} s",
                        {"upstream": registry})


def _upstream(repository: str) -> tuple[str, str]:
    upstream = split_upstream(repository)
    assert upstream is not None, "only upstream repositories are resolved"
    return upstream


def _digest(text: str, registry: str) -> Digest:
    try:
        return Digest.parse(text)
    except SwarmregError:
        raise SwarmregError(UPSTREAM_ERROR, f"upstream {registry} named a malformed digest",
                            {"registry": registry}) from None

