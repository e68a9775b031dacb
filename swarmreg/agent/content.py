"""Where an agent's registry and blob API read blobs: the local store first, then the swarm."""

from __future__ import annotations

import trio

from swarmreg.agent.downloads import Downloads
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.store.blobstore import BlobStore
from swarmreg.store.files import Body

EMPTY = Digest.of(b"")


class SwarmContent:
    """The agent's Content (``swarmreg.registry.read.Content``)."""

    def __init__(self, store: BlobStore, downloads: Downloads) -> None:
        self.store = store
        self.downloads = downloads

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        if digest == EMPTY:
            return 0
        if (size := self.store.size(digest)) is not None:
            return size
        try:
            return (await self.downloads.metainfo(repository, digest)).size
        except SwarmregError as error:
            if error.code is BLOB_UNKNOWN:
                return None
            raise

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> Body:
        if (opened := self.store.open_body(digest, start, end)) is not None:
            self.downloads.reseed(repository, digest)
            return opened[0]
        return await self.downloads.stream(repository, digest, start, end)

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        path = self.store.path(digest)
        if digest not in self.store:
            await self.downloads.metainfo(repository, digest)  # small: often inline
        if digest not in self.store:
            download = await self.downloads.start(repository, digest)
            await download.done.wait()
            if download.error is not None:
                raise download.error
        return await trio.to_thread.run_sync(path.read_bytes)
