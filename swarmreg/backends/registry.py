"""An upstream registry as a read-only storage backend (pull-through caching's blob side).

A namespace's blobs are read from an upstream's Registry V2 API: ``stat`` is a HEAD of the
blob, ``download`` its GET, streamed (``UpstreamClient.blob_stream``) to a consumer that checks
the digest as it stores the bytes. Which upstream: a fixed one (``registry`` in the options), or
the one the namespace names, as swarmreg keeps upstream images (``127.0.0.1:5000/team/app`` is
repository ``team/app`` of ``127.0.0.1:5000``, see swarmreg.upstream.names). Nothing is ever
written to an upstream: uploads and deletes are refused with UNSUPPORTED, and ``list`` yields
nothing, since the Registry API cannot list a repository's blobs.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import attrs

from swarmreg.backends.base import GeneratedBlob, ReadOnlyBackend
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.upstream.client import UpstreamClient, Upstreams
from swarmreg.upstream.names import canonical_registry, split_upstream, upstream_repository
from swarmreg.upstream.settings import REGISTRY_NAME, RegistryConfig

# Exactly the namespaces swarmreg.upstream.names.split_upstream reads as an upstream's: a first
# component with a dot or a colon, or `localhost`, then a slash. The router sends them here.
UPSTREAM_NAMESPACE = r"(?s:(?:[^/]*[.:][^/]*|localhost)/.*)"


def _registry(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if value and not REGISTRY_NAME.fullmatch(value):
        raise ValueError(f"'registry' must be host[:port] (e.g. 'registry.example.com:5000'), got {value!r}")


def _no_password_files(_instance: object, _attribute: attrs.Attribute[Any],
                       value: tuple[RegistryConfig, ...]) -> None:
    names = [registry.name for registry in value]
    if len(set(names)) != len(names):
        raise ValueError("'registries' must name each upstream once")
    if any(registry.auth.password_file for registry in value):
        # Only the top-level [[registries]] have their password files read at load.
        raise ValueError("'registries' of a backend take auth.password; put password_file in the "
                         "top-level [[registries]] instead")


@attrs.frozen
class RegistryOptions:
    """``[[backends]] type = "registry"``: the upstreams' settings (as ``[[registries]]``; an
    upstream without an entry gets anonymous HTTPS), and a fixed upstream for every namespace
    of the entry ("": each namespace names its own upstream)."""

    registries: tuple[RegistryConfig, ...] = attrs.field(default=(), validator=_no_password_files)
    registry: str = attrs.field(default="", validator=_registry)


class RegistryBlob(GeneratedBlob):
    """One blob of an upstream, streamed: its size (from the upstream's HEAD) and its bytes.

    The bytes pass as the upstream sends them: like every backend's, they are checked by the
    consumer as it stores them (the origin hashes them in a worker thread, so the event loop
    need not hash them too)."""

    def __init__(self, client: UpstreamClient, repository: str, digest: Digest, size: int) -> None:
        super().__init__(size)
        self._client = client
        self._repository = repository
        self._digest = digest

    def chunks(self) -> AsyncGenerator[bytes, None]:
        chunks = self._client.blob_stream(self._repository, str(self._digest), verify=False)
        assert isinstance(chunks, AsyncGenerator)
        return chunks


class RegistryBackend(ReadOnlyBackend):
    """Blobs read from upstream registries; read-only. Safe to share between tasks."""

    def __init__(self, registries: Sequence[RegistryConfig] = (), *, registry: str = "",
                 air_gapped: bool = False) -> None:
        self.upstreams = Upstreams(registries)
        self.registry = registry
        # Never contact an upstream: every blob is one this backend does not hold.
        self.air_gapped = air_gapped

    @classmethod
    def from_options(cls, options: RegistryOptions, _data_dir: Path) -> RegistryBackend:
        """The backend ``[[backends]] type = "registry"`` configures."""
        return cls(options.registries, registry=options.registry)

    @classmethod
    def for_upstreams(cls, registries: Sequence[RegistryConfig], air_gapped: bool) -> RegistryBackend:
        """The daemon's backend for every upstream namespace (UPSTREAM_NAMESPACE): the top-level
        ``[[registries]]``, each namespace naming its upstream; with ``air_gapped`` it answers
        every stat and download with None without a request."""
        return cls(registries, air_gapped=air_gapped)

    def locate(self, namespace: str) -> tuple[str, str] | None:
        """(upstream name, repository there) for ``namespace``; None if it names no upstream."""
        if self.registry:
            return canonical_registry(self.registry), upstream_repository(self.registry, namespace)
        return split_upstream(namespace)

    def describe(self, namespace: str) -> str:
        located = self.locate(namespace)
        return f"upstream {located[0]} (repository {located[1]})" if located else super().describe(namespace)

    def _where(self, namespace: str) -> tuple[UpstreamClient, str] | None:
        if self.air_gapped or (located := self.locate(namespace)) is None:
            return None
        registry, repository = located
        return self.upstreams.get(registry), repository

    async def stat(self, namespace: str, digest: Digest) -> int | None:
        where = self._where(namespace)
        if where is None:
            return None
        client, repository = where
        try:
            return await client.blob_size(repository, str(digest))
        except SwarmregError as error:
            if error.code is BLOB_UNKNOWN:
                return None
            raise

    async def download(self, namespace: str, digest: Digest) -> RegistryBlob | None:
        """The blob as it streams from the upstream (a HEAD first, for its size), or None when
        the upstream does not have it; failures to reach it raise UPSTREAM_* errors."""
        where = self._where(namespace)
        if where is None:
            return None
        size = await self.stat(namespace, digest)
        return None if size is None else RegistryBlob(where[0], where[1], digest, size)

    def source(self, namespace: str) -> str:
        located = self.locate(namespace)
        return f"upstream registry {located[0]}" if located else "an upstream registry"

    async def aclose(self) -> None:
        await self.upstreams.aclose()

