"""A client of the origin's blob API, for the roles that put blobs in or read them out over HTTP."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import trio
from quart.wrappers.response import ResponseBody

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, BLOB_UPLOAD_UNKNOWN, SwarmregError, error_code
from swarmreg.store.uploads import UID

# How many bytes of a session have arrived (the proxy turns it into its Range header).
UPLOAD_SIZE = "Upload-Size"

# Each PATCH carries this much; the body is streamed from the file in READ-sized reads.
CHUNK = 32 << 20
READ = 4 << 20


def _raise_for(response: httpx.Response) -> None:
    """Turn an error response of the origin into the SwarmregError it describes."""
    if response.is_success:
        return
    try:
        entry = response.json()["errors"][0]
        raise SwarmregError(error_code(entry["code"]), entry.get("message"), entry.get("detail"))
    except (ValueError, KeyError, IndexError, TypeError):
        raise SwarmregError(BAD_GATEWAY, f"origin answered {response.status_code}") from None


async def _file_part(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        while start < end:
            data = await trio.to_thread.run_sync(os.pread, fd, min(READ, end - start), start)
            if not data:
                raise SwarmregError(BAD_GATEWAY, "file shrank while it was being sent")
            start += len(data)
            yield data
    finally:
        os.close(fd)


class UpstreamBody(ResponseBody):
    """A response body relayed from an open httpx stream; closes the stream when the response ends."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.start, self.end = 0, int(response.headers.get("content-length", 0))

    async def __aenter__(self) -> UpstreamBody:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.response.aclose()

    def close(self) -> None:
        """Closed by __aexit__; a body never sent is closed by the garbage collector with its client."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw(READ)


def blob_url(base: str, namespace: str, digest: Digest, suffix: str = "") -> str:
    """The origin API's URL of a blob (``suffix``: ``/metainfo``, ``/uploads``) under ``base``."""
    return f"{base}/namespace/{quote(namespace, safe='')}/blobs/{digest}{suffix}"


class OriginClient:
    """Kraken's origin API over HTTP: chunked uploads, reads, stats. Use as an async context manager.

    ``tls`` is the cluster's client context (HTTPS with this node's certificate) or None.
    """

    def __init__(self, address: Address, *, timeout: float = 60.0, tls: ssl.SSLContext | None = None) -> None:
        self.base = f"{'https' if tls else 'http'}://{address}"
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5), verify=tls or True)

    async def __aenter__(self) -> OriginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def _url(self, namespace: str, digest: Digest, suffix: str = "") -> str:
        return blob_url(self.base, namespace, digest, suffix)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise SwarmregError(BAD_GATEWAY, f"origin {self.base} unreachable: {type(error).__name__}") from None

    async def upload_file(self, namespace: str, digest: Digest, path: Path, *, through: bool = True) -> None:
        """Upload the file at ``path`` as ``digest`` in CHUNK-sized PATCHes; a blob the origin holds is skipped."""
        started = await self._send("POST", self._url(namespace, digest, "/uploads"))
        if started.status_code == 409:  # the origin has it (and has written it through)
            return
        _raise_for(started)
        upload = self._url(namespace, digest, f"/uploads/{started.headers['location']}")
        size = path.stat().st_size
        for start in range(0, size, CHUNK):
            end = min(start + CHUNK, size)
            _raise_for(await self._send("PATCH", upload, content=_file_part(path, start, end), headers={
                "Content-Range": f"{start},{end}", "Content-Length": str(end - start)}))
        _raise_for(await self._send("PUT", upload, params={"through": "true" if through else "false"}))

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None:
        """Upload a small blob held in memory (a manifest)."""
        started = await self._send("POST", self._url(namespace, digest, "/uploads"))
        if started.status_code == 409:
            return
        _raise_for(started)
        upload = self._url(namespace, digest, f"/uploads/{started.headers['location']}")
        if data:
            _raise_for(await self._send("PATCH", upload, content=data,
                                        headers={"Content-Range": f"0,{len(data)}"}))
        _raise_for(await self._send("PUT", upload, params={"through": "true" if through else "false"}))

    # -- sessions whose digest comes at the end (the proxy's Docker pushes) -------------------

    def _session(self, uid: str) -> str:
        if not UID.fullmatch(uid):  # never let a client's id steer the URL
            raise SwarmregError(BLOB_UPLOAD_UNKNOWN, detail={"uid": uid[:100]})
        return f"{self.base}/uploads/{uid}"

    async def open_session(self, namespace: str) -> str:
        """A new upload session in ``namespace``; returns its id."""
        response = await self._send("POST", f"{self.base}/uploads", params={"namespace": namespace})
        _raise_for(response)
        return response.headers["location"]

    async def append(self, uid: str, namespace: str, chunks: AsyncIterable[bytes], length: int | None) -> int:
        """Stream ``chunks`` onto the end of the session; returns the bytes it now holds."""
        headers = {"Content-Length": str(length)} if length is not None else {}
        response = await self._send("PATCH", self._session(uid), params={"namespace": namespace},
                                    content=chunks, headers=headers)
        _raise_for(response)
        return int(response.headers[UPLOAD_SIZE])

    async def status(self, uid: str, namespace: str) -> int:
        """The bytes the session holds."""
        response = await self._send("GET", self._session(uid), params={"namespace": namespace})
        _raise_for(response)
        return int(response.headers[UPLOAD_SIZE])

    async def finish(self, uid: str, namespace: str, digest: Digest, *, through: bool = True) -> int:
        """Commit the session as ``digest`` (DIGEST_INVALID if it does not match); returns the size."""
        response = await self._send("PUT", self._session(uid), params={
            "namespace": namespace, "digest": str(digest), "through": "true" if through else "false"})
        _raise_for(response)
        return int(response.headers["blob-size"])

    async def cancel(self, uid: str, namespace: str) -> None:
        _raise_for(await self._send("DELETE", self._session(uid), params={"namespace": namespace}))

    async def size(self, namespace: str, digest: Digest) -> int | None:
        """The blob's size at the origin (or its backend), None when unknown."""
        response = await self._send("HEAD", self._url(namespace, digest))
        if response.status_code == 404:
            return None
        _raise_for(response)
        return int(response.headers["content-length"])

    async def read(self, namespace: str, digest: Digest) -> bytes:
        """A small blob's bytes (a manifest)."""
        response = await self._send("GET", self._url(namespace, digest))
        _raise_for(response)
        return response.content

    async def open(self, namespace: str, digest: Digest, range_header: str | None = None) -> UpstreamBody:
        """Start streaming the blob (or the range); the body must be sent or closed."""
        request = self._http.build_request("GET", self._url(namespace, digest),
                                           headers={"Range": range_header} if range_header else None)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise SwarmregError(BAD_GATEWAY, f"origin {self.base} unreachable: {type(error).__name__}") from None
        if not response.is_success:
            await response.aread()
            await response.aclose()
            _raise_for(response)
        return UpstreamBody(response)
