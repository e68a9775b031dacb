"""An agent's view of the index: tags, manifest records and blob links, each kept for a moment.

A lookup is reused for ``agent.tag_ttl`` seconds, then asked again: a pull right
after a push may see the old answer for that long, as with Kraken's agents, and a
tag, manifest or blob link deleted through the proxy stops being served within
it. Tags and blob links are kept whether found or not (a missing one is asked
again after the TTL too); a manifest record only when found, since an unknown one
may be pushed any moment. Concurrent misses of one key share one index request.
Whether a repository exists (a tag list of ``n=0``, which a bare name's fallback to the
default upstream asks on every miss) is kept for the TTL as well. Other tag lists, the catalog
and referrers go to the index as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

from swarmreg.digest import Digest
from swarmreg.errors import NAME_UNKNOWN, SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.singleflight import SingleFlight

# Entries each cache keeps at most (least recently used out first).
MANIFESTS = 10_000

V = TypeVar("V")
Key = tuple[str, str]


class Expiring(Generic[V]):
    """Answers by key, each reused for ``ttl`` seconds from when it was asked.

    With a nursery (the agent's), concurrent misses of a key share one request run
    there; without one, each miss asks on its own.
    """

    def __init__(self, what: str, ttl: float, nursery: trio.Nursery | None, *,
                 keep: Callable[[V], bool] = lambda _: True, limit: int = MANIFESTS) -> None:
        self.ttl = ttl
        self.keep = keep
        self.limit = limit
        self._entries: OrderedDict[Key, tuple[float, V]] = OrderedDict()
        self._flights = SingleFlight[Key, None, V](what, nursery) if nursery is not None else None

    async def get(self, key: Key, fetch: Callable[[], Awaitable[V]]) -> V:
        """The cached answer for ``key`` if fresh, else ``fetch()``'s (kept when ``keep`` says so)."""
        cached = self._entries.get(key)
        if cached is not None and trio.current_time() - cached[0] < self.ttl:
            self._entries.move_to_end(key)
            return cached[1]

        async def ask() -> V:
            asked = trio.current_time()  # the answer's age counts from the question
            value = await fetch()
            if self.keep(value):
                self._entries[key] = (asked, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.limit:
                    self._entries.popitem(last=False)
            else:
                self._entries.pop(key, None)
            return value

        if self._flights is None:
            return await ask()
        return await self._flights.run(key, ask)


class CachedIndex:
    """The index calls the registry read routes make (an IndexReader), and blob links, cached for ``tag_ttl``."""

    def __init__(self, index: IndexClient, tag_ttl: float, nursery: trio.Nursery | None = None) -> None:
        self.index = index
        self.tag_ttl = tag_ttl
        self._tags = Expiring[str | None]("tag lookup", tag_ttl, nursery)
        self._manifests = Expiring[dict[str, Any] | None](
            "manifest lookup", tag_ttl, nursery, keep=lambda meta: meta is not None)
        self._links = Expiring[int | None]("blob link lookup", tag_ttl, nursery)
        self._repositories = Expiring[bool]("repository lookup", tag_ttl, nursery)

    async def get_tag(self, repository: str, tag: str) -> str | None:
        return await self._tags.get((repository, tag), lambda: self.index.get_tag(repository, tag))

    async def get_manifest(self, repository: str, digest: Digest | str) -> dict[str, Any] | None:
        return await self._manifests.get((repository, str(digest)),
                                         lambda: self.index.get_manifest(repository, digest))

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The size of the blob linked in the repository, or None if the repository does not link it."""
        return await self._links.get((repository, str(digest)), lambda: self.index.blob_size(repository, digest))

    # Tag lists, the catalog and referrers change with every push: always asked fresh.

    async def list_tags(self, repository: str, n: int | None = None,
                        last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        if n == 0:  # only whether the repository exists: cached, found or not
            if not await self._repositories.get((repository, ""), lambda: self._exists(repository)):
                raise SwarmregError(NAME_UNKNOWN, detail={"name": repository})
            return [], None
        return await self.index.list_tags(repository, n, last)

    async def _exists(self, repository: str) -> bool:
        try:
            await self.index.list_tags(repository, 0)
        except SwarmregError as error:
            if error.code is NAME_UNKNOWN:
                return False
            raise
        return True

    async def catalog(self, n: int | None = None, last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        return await self.index.catalog(n, last)

    async def referrers(self, repository: str, digest: Digest | str,
                        artifact_type: str | None = None) -> list[dict[str, Any]]:
        return await self.index.referrers(repository, digest, artifact_type)
