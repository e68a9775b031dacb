"""The storage-backend interface.

Modelled on distribution's storage drivers and Kraken's backend clients: a
backend knows nothing of the daemon; it stores blobs by digest, and is told the
namespace so that backends which care (an upstream registry) can use it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

from swarmreg.digest import Digest
from swarmreg.errors import UNSUPPORTED, SwarmregError
from swarmreg.store.files import FileBody

STREAM_CHUNK = 4 << 20


class BlobStream(Protocol):
    """An open blob: its size, and its bytes as an async iterable inside ``async with``."""

    @property
    def size(self) -> int: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class Backend(abc.ABC):
    """One storage backend. Every method is safe to call concurrently."""

    # False for a backend that only reads (an upstream registry): its upload, upload_file and
    # delete raise UNSUPPORTED, and its list may yield nothing.
    writable: ClassVar[bool] = True

    @abc.abstractmethod
    async def stat(self, namespace: str, digest: Digest) -> int | None:
        """The blob's size, or None when the backend does not hold it."""

    @abc.abstractmethod
    async def upload(self, namespace: str, digest: Digest, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream under ``digest``; DIGEST_INVALID if the content does not match.

        Returns the size. Uploading a blob the backend holds already is harmless.
        """

    async def upload_file(self, namespace: str, digest: Digest, path: Path) -> None:
        """Store the local file ``path``, whose content is already known to match ``digest``.

        The default streams it through ``upload``; a backend that can do better
        (a hard link on one filesystem) overrides this.
        """
        body = FileBody(os.open(path, os.O_RDONLY), 0, path.stat().st_size, STREAM_CHUNK)
        async with body:
            await self.upload(namespace, digest, body)

    @abc.abstractmethod
    async def download(self, namespace: str, digest: Digest) -> BlobStream | None:
        """Open the blob for reading, or None when the backend does not hold it."""

    @abc.abstractmethod
    async def delete(self, namespace: str, digest: Digest) -> bool:
        """Remove the blob; False when the backend did not hold it."""

    @abc.abstractmethod
    def list(self, namespace: str) -> AsyncIterator[Digest]:
        """Every digest the backend holds for ``namespace``."""

    async def modified(self, namespace: str, digest: Digest) -> float | None:
        """When the backend last wrote the blob (POSIX seconds), None when it does not hold it;
        the garbage collector's grace period counts from it. A backend that cannot tell is never
        collected: the default raises UNSUPPORTED."""
        raise SwarmregError(UNSUPPORTED, f"{self.describe(namespace)} cannot tell how old its blobs are")

    def describe(self, namespace: str) -> str:
        """Where the blobs of ``namespace`` come from, for error messages (never a path or a secret)."""
        return f"the storage backend of {namespace}"

    async def aclose(self) -> None:  # noqa: B027 - optional to override: most backends hold nothing
        """Release connections and files; the default holds none."""


class ReadOnlyBackend(Backend):
    """A backend swarmreg only reads from (an upstream registry, a web server): uploads and
    deletes raise UNSUPPORTED naming ``source``, and ``list`` yields nothing."""

    writable = False

    def source(self, namespace: str) -> str:
        """What the namespace's blobs are read from, for the refusals' messages."""
        return self.describe(namespace)

    def _refuse(self, namespace: str, what: str) -> SwarmregError:
        return SwarmregError(UNSUPPORTED, f"cannot {what} blobs in {namespace!r}: its storage backend is "
                             f"{self.source(namespace)}, which swarmreg only reads from", {"namespace": namespace})

    async def upload(self, namespace: str, digest: Digest, chunks: AsyncIterable[bytes]) -> int:
        raise self._refuse(namespace, "upload")

    async def upload_file(self, namespace: str, digest: Digest, path: Path) -> None:
        raise self._refuse(namespace, "upload")

    async def delete(self, namespace: str, digest: Digest) -> bool:
        raise self._refuse(namespace, "delete")

    async def list(self, namespace: str) -> AsyncIterator[Digest]:
        """Nothing: the source cannot list its blobs."""
        empty: tuple[Digest, ...] = ()
        for digest in empty:
            yield digest


class GeneratedBlob(abc.ABC):
    """A BlobStream whose bytes an async generator (``chunks``) makes once asked for; read it
    inside ``async with``, which closes the generator (and with it the connection it reads from)
    however the reading ends, a consumer that stopped early included."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._chunks: AsyncGenerator[bytes, None] | None = None

    @property
    def size(self) -> int:
        return self._size

    async def __aenter__(self) -> GeneratedBlob:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self.chunks()
        return self._chunks

    @abc.abstractmethod
    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The blob's bytes, chunk by chunk (called once)."""
