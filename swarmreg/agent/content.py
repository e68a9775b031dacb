"""Where an agent's registry and blob API read blobs: the local store first, then the swarm."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

import trio

from swarmreg.agent.downloads import Downloads
from swarmreg.agent.relay import Relays
from swarmreg.digest import ALGORITHMS, Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.store.blobstore import BlobStore
from swarmreg.store.files import Body

# Manifests up to this size are read in the event loop: a few KiB from the page cache take a
# few microseconds, less than the hand-off to a worker thread and back (a warm manifest GET).
INLINE_READ = 64 << 10
# The empty blob under each algorithm: its content is known, and it has no torrent.
EMPTY = frozenset(Digest.of(b"", algorithm) for algorithm in ALGORITHMS)


class SwarmContent:
    """The agent's Content (``swarmreg.registry.read.Content``)."""

    def __init__(self, store: BlobStore, downloads: Downloads, relays: Relays) -> None:
        self.store = store
        self.downloads = downloads
        self.relays = relays  # a blob an origin still fetches streams from there (see relay.py)
        # Blob and manifest reads found in the store, and those that had to come through the swarm.
        self.hits = 0
        self.misses = 0

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        if digest in EMPTY:
            return 0
        if (size := self.store.size(digest)) is not None:
            return size
        try:
            if (relay := await self.relays.relay(repository, digest)) is not None:
                return relay.size
            return (await self.downloads.metainfo(repository, digest)).size
        except SwarmregError as error:
            if error.code is BLOB_UNKNOWN:
                return None
            raise

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> Body:
        # Pinned from before it is opened until the response ends: the cache never evicts it meanwhile.
        release = self.downloads.cache.pin(digest)
        try:
            return PinnedBody(await self._open(repository, digest, start, end), release)
        except BaseException:
            release()
            raise

    async def _open(self, repository: str, digest: Digest, start: int, end: int) -> Body:
        if (opened := self.store.open_body(digest, start, end)) is not None:
            self.hits += 1
            self.downloads.reseed(repository, digest)
            return opened[0]
        self.misses += 1
        if (relay := await self.relays.relay(repository, digest)) is not None:
            return await self.relays.body(relay, start, end)
        return await self.downloads.stream(repository, digest, start, end)

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        with self.downloads.cache.pinned(digest):
            return await self._manifest_bytes(repository, digest)

    async def _manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        path = self.store.path(digest)
        if digest in self.store:
            self.hits += 1
        else:
            self.misses += 1
            await self.downloads.metainfo(repository, digest)  # small: often inline
            await self.relays.settle(digest)  # or relayed meanwhile
        if digest not in self.store:
            download = await self.downloads.start(repository, digest)
            await download.done.wait()
            if download.error is not None:
                raise download.error
        size = self.store.size(digest)
        if size is not None and size <= INLINE_READ:
            try:
                return path.read_bytes()
            except FileNotFoundError:  # evicted meanwhile: the thread's read says so as before
                pass
        return await trio.to_thread.run_sync(path.read_bytes)


class PinnedBody:
    """A body that keeps its blob pinned in the cache until it is closed (or collected: a
    response cancelled before it started sending never closes its body)."""

    def __init__(self, body: Body, release: Callable[[], None]) -> None:
        self.body = body
        self.start = body.start
        self.end = body.end
        self.release = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.body.__aiter__()

    async def aclose(self) -> None:
        try:
            await self.body.aclose()
        finally:
            self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except RuntimeError:  # collected after the Trio run ended: nothing to wake
            pass


class BlobLinks(Protocol):
    """Which blobs a repository links (the agent's CachedIndex)."""

    async def blob_size(self, repository: str, digest: Digest) -> int | None: ...


class LinkedContent:
    """The registry port's Content: a blob is there only where the index links it, as on the proxy.

    Without this an agent served any blob it could get under any repository name, so
    a client allowed to pull one repository could read another's layers by digest.
    Manifests need no link: the read routes find them in the index first.
    """

    def __init__(self, content: SwarmContent, links: BlobLinks) -> None:
        self.content = content
        self.links = links

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        if await self.links.blob_size(repository, digest) is None:
            return None
        return await self.content.blob_size(repository, digest)

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> Body:
        return await self.content.open_blob(repository, digest, size, start, end)

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        return await self.content.manifest_bytes(repository, digest)
