"""A read-only backend over plain HTTP, as Kraken's http backend: ``HEAD <base>/<digest>`` for a
blob's size, ``GET <base>/<digest>`` for its bytes (a web server or a CDN in front of a directory
of blobs named by digest). Nothing is written: uploads and deletes are refused with UNSUPPORTED,
and ``list`` yields nothing, since a web server lists nothing.

The bytes are checked as they stream: the last chunk is yielded only once the whole body matched
the digest and the size, so a consumer that stores as it reads (the origin) never commits a
wrong blob; a mismatch raises DIGEST_INVALID instead.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from swarmreg.backends.base import GeneratedBlob, ReadOnlyBackend
from swarmreg.digest import Digest
from swarmreg.errors import BACKEND_ERROR, BACKEND_UNAVAILABLE, DIGEST_INVALID, SwarmregError
from swarmreg.http.client import transport_reason

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Hashes of streamed chunks running at once in worker threads (off the event loop), per backend.
HASHING_THREADS = 4


def _base(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parts = urlsplit(value)
        valid = (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
                 and not (parts.query or parts.fragment or "@" in parts.netloc))
    except ValueError:  # a port that is no number, a bracketed host that is no address
        valid = False
    if not valid:
        raise ValueError(f"'base' must be an http:// or https:// URL without credentials, query or fragment "
                         f"(e.g. 'https://blobs.example.com/v1'), got {value!r}")


@attrs.frozen
class HttpOptions:
    """``[[backends]] type = "http"``: where the blobs are (``<base>/<digest>``) and how long to wait."""

    base: str = attrs.field(validator=_base)
    connect_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    read_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    # A PEM file of the CAs an https base is checked against ("": the system's).
    ca: str = ""


class HttpBackend(ReadOnlyBackend):
    """Blobs read from ``<base>/<digest>``; read-only. Safe to share between tasks."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self.base = options.base.rstrip("/")
        self.host = urlsplit(options.base).netloc
        # A ca file that cannot be read fails this backend's requests, not the daemon's start.
        self._broken: SwarmregError | None = None
        verify: ssl.SSLContext | bool = True
        if options.ca:
            try:
                verify = ssl.create_default_context(cafile=options.ca)
            except (OSError, ssl.SSLError) as error:
                log.error("%s: cannot use ca %s: %s", self.describe(""), options.ca, error)
                self._broken = SwarmregError(BACKEND_ERROR, f"{self.describe('')}: its ca file cannot be used "
                                             "(the log says why)")
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout, pool=options.connect_timeout)
        # Identity: the bytes counted and hashed are the blob's, the size the HEAD's.
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=True,
                                       headers={"Accept-Encoding": "identity"})
        self._hashing = trio.CapacityLimiter(HASHING_THREADS)

    @classmethod
    def from_options(cls, options: HttpOptions, _data_dir: Path) -> HttpBackend:
        """The backend ``[[backends]] type = "http"`` configures."""
        return cls(options)

    def url(self, digest: Digest) -> str:
        return f"{self.base}/{digest}"

    def describe(self, namespace: str) -> str:
        return f"the HTTP backend at {self.host}"

    async def stat(self, namespace: str, digest: Digest) -> int | None:
        response = await self.send("HEAD", digest)
        if response is None:
            return None
        length = response.headers.get("Content-Length", "")
        if not length.isdigit():
            raise SwarmregError(BACKEND_ERROR, f"{self.describe(namespace)} gave no size for {digest}")
        return int(length)

    async def download(self, namespace: str, digest: Digest) -> HttpBlob | None:
        """The blob as it streams (a HEAD first, for its size), or None when it is not there."""
        size = await self.stat(namespace, digest)
        return None if size is None else HttpBlob(self, digest, size)

    async def send(self, method: str, digest: Digest, *, stream: bool = False) -> httpx.Response | None:
        """The answer to ``method`` of the blob's URL (streaming: the caller closes it), None for a
        404 or 410; other failures raised as BACKEND_* errors naming the host, never the URL's path."""
        if self._broken is not None:
            raise self._broken
        try:
            response = await self._http.send(self._http.build_request(method, self.url(digest)), stream=stream)
        except httpx.HTTPError as error:
            raise self.unavailable(error) from None
        if response.status_code in (404, 410):
            await response.aclose()
            return None
        if not response.is_success:
            await response.aclose()
            code = BACKEND_UNAVAILABLE if response.status_code >= 500 else BACKEND_ERROR
            raise SwarmregError(code, f"{self.describe('')} answered {response.status_code} for {digest}")
        return response

    def unavailable(self, error: httpx.HTTPError) -> SwarmregError:
        """BACKEND_UNAVAILABLE for a request that failed on its way (its reason goes to the log)."""
        if isinstance(error, httpx.ReadTimeout):
            reason = f"no answer within read_timeout ({self.options.read_timeout:g} s)"
        elif isinstance(error, httpx.TimeoutException):
            reason = f"no connection within connect_timeout ({self.options.connect_timeout:g} s)"
        elif isinstance(error, httpx.ConnectError):
            reason = "cannot connect"
        else:
            reason = "broke off its answer"
        log.warning("%s: %s", self.describe(""), transport_reason(error))
        return SwarmregError(BACKEND_UNAVAILABLE, f"{self.describe('')}: {reason}")

    async def hash(self, hasher: Any, chunk: bytes) -> None:
        """Feed ``chunk`` to ``hasher`` in a worker thread (hashlib lets go of the GIL)."""
        await trio.to_thread.run_sync(hasher.update, chunk, limiter=self._hashing)

    async def aclose(self) -> None:
        await self._http.aclose()


class HttpBlob(GeneratedBlob):
    """One blob of an HTTP backend, streamed and checked (see the module's docstring)."""

    def __init__(self, backend: HttpBackend, digest: Digest, size: int) -> None:
        super().__init__(size)
        self._backend = backend
        self._digest = digest

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        backend, digest, where = self._backend, self._digest, self._backend.describe("")
        response = await backend.send("GET", digest, stream=True)
        if response is None:
            raise SwarmregError(BACKEND_ERROR, f"{where}: {digest} went away between its HEAD and its GET")
        hasher, received, pending = digest.hasher(), 0, b""
        try:
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                received += len(chunk)
                if received > self._size:
                    raise SwarmregError(BACKEND_ERROR, f"{where} sent more than the {self._size} bytes of {digest}")
                await backend.hash(hasher, chunk)
                if pending:
                    yield pending
                pending = chunk
        except httpx.HTTPError as error:
            raise backend.unavailable(error) from None
        finally:
            await response.aclose()
        if received != self._size:
            raise SwarmregError(BACKEND_ERROR, f"{where} sent {received} of the {self._size} bytes of {digest}")
        if hasher.hexdigest() != digest.hex:
            raise SwarmregError(DIGEST_INVALID, f"{where} sent content that does not match {digest}",
                                {"digest": str(digest), "actual": f"{digest.algorithm}:{hasher.hexdigest()}"})
        if pending:
            yield pending
