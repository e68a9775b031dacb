"""A client of an agent's blob API: for the proxy's preheat, ask the agent to prefetch blobs and
read how that went; for ``swarmreg blob pull``, stream a blob (or its rest, from an offset)."""

from __future__ import annotations

import logging
import re
from typing import Any

import attrs
import httpx

from swarmreg.agent.wire import PREFETCH, blob_path
from swarmreg.authz import bearer_headers
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, RANGE_INVALID, SwarmregError
from swarmreg.http.client import raise_for_error, transport_reason

log = logging.getLogger(__name__)

# A 206's Content-Range (RFC 9110): the first and last byte sent, and the blob's size.
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
# A 416's: the blob's size.
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d{1,19})")


@attrs.frozen
class BlobStream:
    """An agent's answer to a read of a blob from ``start``, streaming: ``size`` is the whole
    blob's (None when the agent did not say), and the body is bytes [start, size)."""

    response: httpx.Response
    start: int
    size: int | None


class RangeNotSatisfiable(SwarmregError):
    """The offset asked for is at or past the blob's end; ``size`` is the blob's, if the agent said."""

    def __init__(self, size: int | None) -> None:
        super().__init__(RANGE_INVALID, "the offset is at or past the blob's end", {"size": size})
        self.size = size


class AgentClient:
    """One agent's blob API (plain HTTP, as agents serve it); use as an async context manager.
    ``secret`` is the cluster secret, sent as a bearer token: prefetching is for the proxy."""

    def __init__(self, address: Address, *, secret: str = "", timeout: float = 30.0) -> None:
        self.address = address
        self.base = f"http://{address}"
        self._http = httpx.AsyncClient(base_url=self.base, headers=bearer_headers(secret),
                                       timeout=httpx.Timeout(timeout, connect=5))

    def _unreachable(self, method: str, path: str, error: httpx.HTTPError) -> SwarmregError:
        log.warning("agent %s: %s %s failed: %s", self.base, method, path, transport_reason(error))
        return SwarmregError(BAD_GATEWAY, f"agent unreachable: {type(error).__name__}")

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path)
        except httpx.HTTPError as error:
            raise self._unreachable(method, path, error) from None
        raise_for_error(response, "agent")
        try:
            body: dict[str, Any] = response.json()
            body["state"]  # noqa: B018 (the field every answer has)
        except (ValueError, KeyError, TypeError):
            raise SwarmregError(BAD_GATEWAY, "agent answered a prefetch without its state") from None
        return body

    async def prefetch(self, namespace: str, digest: Digest) -> dict[str, Any]:
        """Ask the agent to fetch the blob; ``{"state": "running" | "done" | "failed", ...}`` at once."""
        return await self._send("POST", blob_path(namespace, digest, PREFETCH))

    async def prefetch_status(self, namespace: str, digest: Digest) -> dict[str, Any]:
        """How the blob's prefetch is going (JOB_UNKNOWN if the agent was not asked)."""
        return await self._send("GET", blob_path(namespace, digest, PREFETCH))

    async def open_blob(self, namespace: str, digest: Digest, start: int = 0) -> BlobStream:
        """Start streaming the blob from byte ``start`` (a Range request past 0); the response must
        be closed. An agent that ignores the range sends the whole blob (``start`` 0 then); one
        whose Content-Range does not start at ``start`` is BAD_GATEWAY; RangeNotSatisfiable when
        ``start`` is at or past the end; the agent's error otherwise (BLOB_UNKNOWN)."""
        path = blob_path(namespace, digest)
        request = self._http.build_request("GET", path, headers={"Range": f"bytes={start}-"} if start else None)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unreachable("GET", path, error) from None
        try:
            if response.status_code not in (200, 206):
                await response.aread()
            return _blob_stream(response, start)
        except BaseException:
            await response.aclose()
            raise


def _blob_stream(response: httpx.Response, start: int) -> BlobStream:
    """What an answer to ``open_blob`` streams, checked (see there)."""
    length = response.headers.get("content-length", "")
    declared = int(length) if length.isdigit() and len(length) <= 19 else None
    if response.status_code == 200:
        return BlobStream(response, 0, declared)
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None or int(match[1]) != start or int(match[2]) + 1 != int(match[3]) or (
                declared is not None and declared != int(match[2]) + 1 - start):
            raise SwarmregError(BAD_GATEWAY, f"agent answered a range other than the one asked for (from byte "
                                f"{start}): Content-Range {response.headers.get('content-range', '(none)')[:80]!r}")
        return BlobStream(response, start, int(match[3]))
    if response.status_code == 416:
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        raise RangeNotSatisfiable(int(match[1]) if match else None)
    raise_for_error(response, "agent")
    raise SwarmregError(BAD_GATEWAY, f"agent answered {response.status_code} to a read of a blob")
