"""An agent's view of the index: manifest records cached for good, tags for a moment.

A manifest record (media type, size) never changes for a digest, so it is kept
(least recently used first out). A tag can move, so a lookup is reused only for
``agent.tag_ttl`` seconds: a pull right after a push may see the old digest for
that long, as with Kraken's agents. Everything else goes to the index as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import trio

from swarmreg.digest import Digest
from swarmreg.index.client import IndexClient

MANIFESTS = 10_000


class CachedIndex:
    """The index calls the registry read routes make (an IndexReader), with caching where it is safe."""

    def __init__(self, index: IndexClient, tag_ttl: float) -> None:
        self.index = index
        self.tag_ttl = tag_ttl
        self._tags: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._manifests: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    async def get_tag(self, repository: str, tag: str) -> str | None:
        key, now = (repository, tag), trio.current_time()
        cached = self._tags.get(key)
        if cached is not None and now - cached[0] < self.tag_ttl:
            return cached[1]
        digest = await self.index.get_tag(repository, tag)
        if len(self._tags) > MANIFESTS:
            self._tags.clear()
        self._tags[key] = (now, digest)
        return digest

    async def get_manifest(self, repository: str, digest: Digest | str) -> dict[str, Any] | None:
        key = (repository, str(digest))
        if (meta := self._manifests.get(key)) is not None:
            self._manifests.move_to_end(key)
            return meta
        meta = await self.index.get_manifest(repository, digest)
        if meta is not None:  # an unknown manifest may be pushed any moment: not cached
            self._manifests[key] = meta
            if len(self._manifests) > MANIFESTS:
                self._manifests.popitem(last=False)
        return meta

    # Tag lists, the catalog and referrers change with every push: always asked fresh.

    async def list_tags(self, repository: str, n: int | None = None,
                        last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        return await self.index.list_tags(repository, n, last)

    async def catalog(self, n: int | None = None, last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        return await self.index.catalog(n, last)

    async def referrers(self, repository: str, digest: Digest | str,
                        artifact_type: str | None = None) -> list[dict[str, Any]]:
        return await self.index.referrers(repository, digest, artifact_type)
