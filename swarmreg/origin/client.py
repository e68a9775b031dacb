"""A client of the origin's blob API, for the roles that put blobs in or read them out over HTTP."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from swarmreg.authz import bearer_headers
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, BLOB_UPLOAD_UNKNOWN, SwarmregError
from swarmreg.http.client import raise_for_error, transport_reason
from swarmreg.origin.wire import (
    BLOB_SIZE,
    DRY_RUN,
    FETCH_WAIT,
    GC,
    GC_WAIT,
    METAINFO,
    PEER_ID_HEADER,
    PEER_PORT_HEADER,
    RELAY_PENDING,
    SESSIONS,
    THROUGH,
    UPLOAD_ID,
    UPLOAD_SIZE,
    UPLOADS,
    WAIT,
    blob_path,
    session_path,
)
from swarmreg.store.files import FileBody

log = logging.getLogger(__name__)

# Each PATCH carries this much; the body is streamed from the file in READ-sized reads.
CHUNK = 32 << 20
READ = 4 << 20
# How long the cancel of a session that a failed request leaves may take (see abandon).
ABANDON_TIMEOUT = 10.0


class UpstreamBody:
    """A blob body relayed from an open httpx stream (a ``swarmreg.store.files.Body``)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.start, self.end = 0, int(response.headers.get("content-length", 0))

    async def aclose(self) -> None:
        await self.response.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw(READ)


@attrs.frozen
class OriginMetainfo:
    """A blob's torrent metainfo as an origin serves it, and the peer that seeds it there."""

    raw: bytes
    peer_id: str
    peer_port: int


def _flag(value: bool) -> str:
    return "true" if value else "false"


class OriginClient:
    """Kraken's origin API over HTTP: chunked uploads, reads, stats. Use as an async context manager.

    ``tls`` is the cluster's client context (HTTPS with this node's certificate) or None;
    ``secret`` the cluster secret, sent as a bearer token (``[cluster] secret``).
    """

    def __init__(self, address: Address, *, timeout: float = 60.0, tls: ssl.SSLContext | None = None,
                 secret: str = "") -> None:
        self.address = address
        self.base = f"{'https' if tls else 'http'}://{address}"
        self._http = httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(timeout, connect=5),
                                       verify=tls or True, headers=bearer_headers(secret))
        # For answers that may wait for a fetch from the origin's backend.
        self._fetch_timeout = httpx.Timeout(timeout, connect=5, read=FETCH_WAIT)

    async def __aenter__(self) -> OriginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise self._unreachable(method, path, error) from None

    def _unreachable(self, method: str, path: str, error: httpx.HTTPError) -> SwarmregError:
        """The error for a request that got no answer: the log names the origin's address, the
        answer (which may reach a registry client) only says the origin was unreachable."""
        log.warning("origin %s: %s %s failed: %s", self.base, method, path, transport_reason(error))
        return SwarmregError(BAD_GATEWAY, f"origin unreachable: {type(error).__name__}")

    async def _checked(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(method, path, **kwargs)
        raise_for_error(response, "origin")
        return response

    # -- garbage collection ----------------------------------------------------------------

    async def collect_garbage(self, *, dry_run: bool) -> dict[str, Any]:
        """Run one garbage collection on the origin now and return its report (JSON)."""
        response = await self._checked("POST", GC, params={DRY_RUN: _flag(dry_run)},
                                       timeout=httpx.Timeout(GC_WAIT, connect=5))
        report: dict[str, Any] = response.json()
        return report

    # -- uploads of a known digest (Kraken's API) --------------------------------------------

    async def _start_upload(self, namespace: str, digest: Digest) -> str | None:
        """The upload's path, or None when the origin holds the blob (and has written it through)."""
        started = await self._send("POST", blob_path(namespace, digest, UPLOADS))
        if started.status_code == 409:
            return None
        raise_for_error(started, "origin")
        return blob_path(namespace, digest, f"{UPLOADS}/{started.headers['location']}")

    async def upload_file(self, namespace: str, digest: Digest, path: Path, *, through: bool = True) -> None:
        """Upload the file at ``path`` as ``digest`` in CHUNK-sized PATCHes; a blob the origin holds is skipped."""
        upload = await self._start_upload(namespace, digest)
        if upload is None:
            return
        async with self._abandoned_on_failure(namespace, upload):
            size = path.stat().st_size
            for start in range(0, size, CHUNK):
                end = min(start + CHUNK, size)
                async with FileBody(os.open(path, os.O_RDONLY), start, end, READ) as body:
                    await self._checked("PATCH", upload, content=body, headers={
                        "Content-Range": f"{start},{end}", "Content-Length": str(end - start)})
            await self._checked("PUT", upload, params={THROUGH: _flag(through)})

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None:
        """Upload a small blob held in memory (a manifest)."""
        upload = await self._start_upload(namespace, digest)
        if upload is None:
            return
        async with self._abandoned_on_failure(namespace, upload):
            if data:
                await self._checked("PATCH", upload, content=data, headers={"Content-Range": f"0,{len(data)}"})
            await self._checked("PUT", upload, params={THROUGH: _flag(through)})

    @asynccontextmanager
    async def _abandoned_on_failure(self, namespace: str, upload: str) -> AsyncIterator[None]:
        """Around the PATCHes and PUT of a Kraken upload at ``upload`` (its path): when they fail,
        the session is cancelled, so that it does not hold one of the origin's bounded sessions."""
        try:
            yield
        except BaseException:
            await self.abandon(upload.rsplit("/", 1)[-1], namespace)
            raise

    # -- sessions whose digest comes at the end (the proxy's Docker pushes) -------------------

    @staticmethod
    def _session(uid: str) -> str:
        if not UPLOAD_ID.fullmatch(uid):  # never let a client's id steer the URL
            raise SwarmregError(BLOB_UPLOAD_UNKNOWN, detail={"uid": uid[:100]})
        return session_path(uid)

    async def open_session(self, namespace: str) -> str:
        """A new upload session in ``namespace``; returns its id."""
        response = await self._checked("POST", SESSIONS, params={"namespace": namespace})
        return response.headers["location"]

    async def append(self, uid: str, namespace: str, chunks: AsyncIterable[bytes], length: int | None) -> int:
        """Stream ``chunks`` onto the end of the session; returns the bytes it now holds."""
        headers = {"Content-Length": str(length)} if length is not None else {}
        response = await self._checked("PATCH", self._session(uid), params={"namespace": namespace},
                                       content=chunks, headers=headers)
        return int(response.headers[UPLOAD_SIZE])

    async def status(self, uid: str, namespace: str) -> int:
        """The bytes the session holds."""
        response = await self._checked("GET", self._session(uid), params={"namespace": namespace})
        return int(response.headers[UPLOAD_SIZE])

    async def finish(self, uid: str, namespace: str, digest: Digest, *, through: bool = True) -> int:
        """Commit the session as ``digest`` (DIGEST_INVALID if it does not match); returns the size."""
        response = await self._checked("PUT", self._session(uid), params={
            "namespace": namespace, "digest": str(digest), THROUGH: _flag(through)})
        return int(response.headers[BLOB_SIZE])

    async def cancel(self, uid: str, namespace: str) -> None:
        await self._checked("DELETE", self._session(uid), params={"namespace": namespace})

    async def abandon(self, uid: str, namespace: str) -> None:
        """Cancel a session that a failed request leaves, best effort: the origin bounds its open
        sessions (429 past the limit), so one left until its TTL takes a slot from every client.

        Shielded, since the request may be failing because it is being cancelled (its client hung
        up), and bounded by ABANDON_TIMEOUT; a session already gone (committed, or dropped on a
        digest mismatch) is fine, and any other failure is logged: the TTL removes the session.
        """
        with trio.CancelScope(shield=True, deadline=trio.current_time() + ABANDON_TIMEOUT) as scope:
            try:
                await self.cancel(uid, namespace)
            except SwarmregError as error:
                if error.code is not BLOB_UPLOAD_UNKNOWN:
                    log.warning("cannot cancel upload session %s at origin %s: %s", uid, self.base, error.message)
        if scope.cancelled_caught:
            log.warning("cancelling upload session %s at origin %s timed out", uid, self.base)

    # -- reads ---------------------------------------------------------------------------------

    async def size(self, namespace: str, digest: Digest) -> int | None:
        """The blob's size at the origin (or its backend), None when unknown."""
        response = await self._send("HEAD", blob_path(namespace, digest))
        if response.status_code == 404:
            return None
        raise_for_error(response, "origin")
        return int(response.headers["content-length"])

    async def read(self, namespace: str, digest: Digest) -> bytes:
        """A small blob's bytes (a manifest)."""
        return (await self._checked("GET", blob_path(namespace, digest))).content

    async def hold(self, namespace: str, digest: Digest) -> None:
        """Make the origin hold (fetching it from its backend if needed, however long that takes)
        and seed the blob; a body opened afterwards then streams at once."""
        await self.metainfo(namespace, digest)

    async def metainfo(self, namespace: str, digest: Digest) -> OriginMetainfo:
        """The blob's torrent metainfo (the origin fetches and seeds the blob first); BLOB_UNKNOWN if it has none."""
        response = await self._checked("GET", blob_path(namespace, digest, METAINFO), timeout=self._fetch_timeout)
        return self._metainfo(response, digest)

    async def metainfo_or_pending(self, namespace: str, digest: Digest) -> OriginMetainfo | int:
        """The metainfo, or the blob's size while the origin fetches it and offers to stream it as
        it arrives (a relay: GET the blob from ``base``). Past the origin's relay limit, this waits
        for the metainfo as ``metainfo`` does."""
        response = await self._checked("GET", blob_path(namespace, digest, METAINFO), params={WAIT: "false"},
                                       timeout=self._fetch_timeout)
        if response.status_code == RELAY_PENDING:
            try:
                size = int(response.headers[BLOB_SIZE])
            except (KeyError, ValueError):
                size = -1
            if size <= 0:
                log.warning("origin %s offered a relay of %s without its size", self.base, digest)
                raise SwarmregError(BAD_GATEWAY, "origin offered a relay without the blob's size")
            return size
        return self._metainfo(response, digest)

    def _metainfo(self, response: httpx.Response, digest: Digest) -> OriginMetainfo:
        try:
            return OriginMetainfo(response.content, response.headers[PEER_ID_HEADER],
                                  int(response.headers[PEER_PORT_HEADER]))
        except (KeyError, ValueError):
            log.warning("origin %s named no seeder for the metainfo of %s", self.base, digest)
            raise SwarmregError(BAD_GATEWAY, "origin named no seeder for the metainfo") from None

    async def open(self, namespace: str, digest: Digest, range_header: str | None = None) -> UpstreamBody:
        """Start streaming the blob (or the range); the body must be sent or closed."""
        request = self._http.build_request("GET", blob_path(namespace, digest),
                                           headers={"Range": range_header} if range_header else None)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unreachable("GET", request.url.path, error) from None
        if not response.is_success:
            await response.aread()
            await response.aclose()
            raise_for_error(response, "origin")
        return UpstreamBody(response)

