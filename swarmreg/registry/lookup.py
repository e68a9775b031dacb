"""Manifest lookups in the index that the registry's read routes and the proxy's preheat jobs
share, free of any web framework (a client module may import this)."""

from __future__ import annotations

from typing import Any, Protocol

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_UNKNOWN, NAME_UNKNOWN, SwarmregError
from swarmreg.oci.names import parse_reference


class IndexReader(Protocol):
    """The index calls the read routes make (an IndexClient, or an agent's CachedIndex)."""

    async def get_tag(self, repository: str, tag: str) -> str | None: ...

    async def get_manifest(self, repository: str, digest: Digest | str) -> dict[str, Any] | None: ...

    async def list_tags(self, repository: str, n: int | None = None,
                        last: str | None = None) -> tuple[list[str], dict[str, Any] | None]: ...

    async def catalog(self, n: int | None = None,
                      last: str | None = None) -> tuple[list[str], dict[str, Any] | None]: ...

    async def referrers(self, repository: str, digest: Digest | str,
                        artifact_type: str | None = None) -> list[dict[str, Any]]: ...


async def has_repository(index: IndexReader, repository: str) -> bool:
    """Whether the index holds ``repository`` (any manifest or blob link in it)."""
    try:
        await index.list_tags(repository, 0)
    except SwarmregError as error:
        if error.code is NAME_UNKNOWN:
            return False
        raise
    return True


async def resolve(index: IndexReader, repository: str, reference: str) -> tuple[Digest, dict[str, Any]]:
    """A manifest reference (tag or digest) -> its digest and its metadata in the index."""
    target = parse_reference(reference)
    if isinstance(target, Digest):
        digest: Digest | None = target
    else:
        tagged = await index.get_tag(repository, target)
        digest = Digest.parse(tagged) if tagged is not None else None
    meta = await index.get_manifest(repository, digest) if digest is not None else None
    if digest is None or meta is None:
        raise SwarmregError(MANIFEST_UNKNOWN, detail={"name": repository, "reference": reference[:200]})
    return digest, meta
