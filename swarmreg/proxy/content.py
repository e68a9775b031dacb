"""Reading blobs and manifests for the proxy: from the origin over HTTP, visibility from the index."""

from __future__ import annotations

from swarmreg.digest import Digest
from swarmreg.index.client import IndexClient
from swarmreg.origin.client import OriginClient, UpstreamBody
from swarmreg.upstream.names import split_upstream


class OriginContent:
    """The proxy's Content: a blob is visible in a repository when the index links it there."""

    def __init__(self, origin: OriginClient, index: IndexClient) -> None:
        self.origin = origin
        self.index = index

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        return await self.index.blob_size(repository, digest)

    async def confirm_blob(self, repository: str, digest: Digest) -> int | None:
        """A HEAD's answer: a push that finds the layer present skips its upload, so its link is
        renewed, which keeps it from garbage collection until the manifest PUT (docs/gc.md)."""
        return await self.index.renew_blob(repository, digest)

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> UpstreamBody:
        if split_upstream(repository) is not None:
            await self.origin.hold(repository, digest)  # a fetch from the upstream may take minutes
        whole = start == 0 and end == size
        return await self.origin.open(repository, digest, None if whole else f"bytes={start}-{end - 1}")

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        return await self.origin.read(repository, digest)
