"""A client of the origin's blob API, for the roles that put blobs in or read them out over HTTP."""

from __future__ import annotations

import copy
import logging
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import xxhash

from swarmreg.authz import bearer_headers
from swarmreg.cluster.ring import Ring
from swarmreg.cluster.transport import KEY, MEMBER, NEXT_ON, PLACEHOLDER, RingTransport, url_of
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, BLOB_UPLOAD_UNKNOWN, SwarmregError
from swarmreg.http.client import raise_for_error, transport_reason
from swarmreg.http.paths import HEALTH
from swarmreg.origin.wire import (
    BLOB_SIZE,
    DRY_RUN,
    FETCH_WAIT,
    GC,
    GC_WAIT,
    LOCAL,
    METAINFO,
    PEER_ID_HEADER,
    PEER_PORT_HEADER,
    RELAY_PENDING,
    REPLICA,
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
# Answers to a read after which the next origin of the blob is asked: it may not have the blob
# (yet), or be in trouble; the last origin's answer is the one returned.
READ_NEXT_ON = frozenset({404, 500, 502, 503, 504})


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


@attrs.frozen
class KrakenUpload:
    """An open upload of a known digest (Kraken's API) at the origin ``member``; ``uid`` matches UPLOAD_ID."""

    member: Address
    namespace: str
    digest: Digest
    uid: str

    @property
    def path(self) -> str:
        return blob_path(self.namespace, self.digest, f"{UPLOADS}/{self.uid}")


@attrs.frozen
class Pending:
    """The origin at ``base`` (its URL) fetches the blob (``size`` bytes) and offers to stream it as it arrives."""

    size: int
    base: str


def _flag(value: bool) -> str:
    return "true" if value else "false"


class OriginClient:
    """Kraken's origin API over HTTP: chunked uploads, reads, stats. Use as an async context manager.

    ``target`` is one origin's address, or a ring of origins (swarmreg.cluster): a blob's requests
    go to its owners in ring order, the next one on failure (see swarmreg.cluster.transport); an
    upload to the first live one.
    ``tls`` is the cluster's client context (HTTPS with this node's certificate) or None;
    ``secret`` the cluster secret, sent as a bearer token (``[cluster] secret``).
    """

    def __init__(self, target: Address | Ring, *, timeout: float = 60.0, tls: ssl.SSLContext | None = None,
                 secret: str = "") -> None:
        self.ring = target if isinstance(target, Ring) else Ring.static("origin", target)
        self._tls = tls is not None
        self._pinned: Address | None = None
        self._http = httpx.AsyncClient(base_url=url_of(Address(PLACEHOLDER, 0), self._tls),
                                       timeout=httpx.Timeout(timeout, connect=5), headers=bearer_headers(secret),
                                       transport=RingTransport(self.ring, verify=tls or True, budget=timeout))
        # For answers that may wait for a fetch from the origin's backend.
        self._fetch_timeout = httpx.Timeout(timeout, connect=5, read=FETCH_WAIT)

    def at(self, member: Address) -> OriginClient:
        """This client with every request sent to ``member`` only (sharing its connections)."""
        pinned = copy.copy(self)
        pinned._pinned = member
        return pinned

    @property
    def address(self) -> Address:
        """The origin this client is pinned to, else the ring's first member (its only one, for an address)."""
        if self._pinned is not None:
            return self._pinned
        return self.ring.members[0] if self.ring.members else Address(PLACEHOLDER, 0)

    @property
    def base(self) -> str:
        return url_of(self.address, self._tls)

    async def __aenter__(self) -> OriginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _extensions(self, key: Digest | None, member: Address | None, next_on: frozenset[int]) -> dict[str, Any]:
        member = member or self._pinned
        if member is not None:
            return {MEMBER: member}
        return {KEY: str(key) if key is not None else "", NEXT_ON: next_on}

    async def _send(self, method: str, path: str, *, key: Digest | None = None, member: Address | None = None,
                    next_on: frozenset[int] = frozenset(), **kwargs: Any) -> httpx.Response:
        """The answer of the origin that ``member`` names, else of the first of ``key``'s that
        answers (the next one asked after an answer in ``next_on``, for a read)."""
        try:
            return await self._http.request(method, path, extensions=self._extensions(key, member, next_on),
                                            **kwargs)
        except httpx.HTTPError as error:
            raise self._unreachable(method, path, error) from None

    def _unreachable(self, method: str, path: str, error: httpx.HTTPError) -> SwarmregError:
        """The error for a request that got no answer: the log names the origin's address, the
        answer (which may reach a registry client) only says the origin was unreachable."""
        where = error.request.url.netloc.decode() if _has_request(error) else self.ring
        log.warning("origin %s: %s %s failed: %s", where, method, path, transport_reason(error))
        return SwarmregError(BAD_GATEWAY, f"origin unreachable: {type(error).__name__}")

    async def _checked(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(method, path, **kwargs)
        raise_for_error(response, "origin")
        return response

    async def health(self) -> None:
        """Return if the origin answers its health check; the error its answer (or silence) is otherwise."""
        await self._checked("GET", HEALTH)

    # -- garbage collection ----------------------------------------------------------------

    async def collect_garbage(self, *, dry_run: bool) -> dict[str, Any]:
        """Run one garbage collection on the origin now and return its report (JSON)."""
        response = await self._checked("POST", GC, params={DRY_RUN: _flag(dry_run)},
                                       timeout=httpx.Timeout(GC_WAIT, connect=5))
        report: dict[str, Any] = response.json()
        return report

    # -- uploads of a known digest (Kraken's API) --------------------------------------------

    async def start_upload(self, namespace: str, digest: Digest, *, replica: bool = False) -> KrakenUpload | None:
        """Open an upload at the blob's first live owner, or None when that origin holds the blob
        (and has written it through). A ``replica`` is one origin's copy for another, which does
        not send it on."""
        started = await self._send("POST", blob_path(namespace, digest, UPLOADS), key=digest,
                                   params={REPLICA: "true"} if replica else None)
        if started.status_code == 409:
            return None
        raise_for_error(started, "origin")
        uid = started.headers.get("location", "")
        if not UPLOAD_ID.fullmatch(uid):  # never let an answer steer a URL
            raise SwarmregError(BAD_GATEWAY, "origin answered an upload without a valid id")
        return KrakenUpload(started.extensions[MEMBER], namespace, digest, uid)

    async def upload_offset(self, upload: KrakenUpload) -> int:
        """Where the next chunk of ``upload`` starts (how many bytes it holds, in order);
        BLOB_UPLOAD_UNKNOWN when the origin no longer has it (committed, cancelled, expired)."""
        response = await self._checked("GET", upload.path, member=upload.member)
        size = response.headers.get(UPLOAD_SIZE, "")
        if not size.isdigit() or len(size) > 19:
            raise SwarmregError(BAD_GATEWAY, "origin answered an upload's status without its size")
        return int(size)

    async def send_file(self, upload: KrakenUpload, fd: int, start: int, end: int, *, chunk: int = CHUNK,
                        sent: Callable[[int], None] | None = None) -> None:
        """PATCH bytes [start, end) of the open file ``fd`` (the caller's) in ``chunk``-sized
        chunks, streamed; ``sent(n)`` is told of every read that went out."""
        for first in range(start, end, chunk):
            last = min(first + chunk, end)
            async with FileBody(os.dup(fd), first, last, min(READ, chunk)) as body:
                await self._checked("PATCH", upload.path, member=upload.member,
                                    content=_counted(body, sent) if sent else body,
                                    headers={"Content-Range": f"{first},{last}", "Content-Length": str(last - first)})

    async def commit_upload(self, upload: KrakenUpload, *, through: bool, replica: bool = False) -> int:
        """Commit ``upload`` (the origin verifies its digest); returns the blob's size."""
        response = await self._checked("PUT", upload.path, member=upload.member,
                                       params={THROUGH: _flag(through), **({REPLICA: "true"} if replica else {})})
        size = response.headers.get(BLOB_SIZE, "")
        return int(size) if size.isdigit() else -1

    async def _upload(self, namespace: str, digest: Digest, patch: Callable[[KrakenUpload], Awaitable[None]], *,
                      through: bool, replica: bool = False) -> bool:
        """A Kraken upload: POST, ``patch(upload)`` sends the bytes, PUT commits; False when the
        origin holds the blob already. A failed one is cancelled (see _abandoned_on_failure)."""
        upload = await self.start_upload(namespace, digest, replica=replica)
        if upload is None:
            return False
        async with self._abandoned_on_failure(upload):
            await patch(upload)
            await self.commit_upload(upload, through=through, replica=replica)
        return True

    async def upload_file(self, namespace: str, digest: Digest, path: Path, *, through: bool = True,
                          replica: bool = False) -> bool:
        """Upload the file at ``path`` as ``digest`` in CHUNK-sized PATCHes; False when the origin
        holds the blob already."""
        async def patch(upload: KrakenUpload) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                await self.send_file(upload, fd, 0, os.fstat(fd).st_size)
            finally:
                os.close(fd)

        return await self._upload(namespace, digest, patch, through=through, replica=replica)

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None:
        """Upload a small blob held in memory (a manifest)."""
        async def patch(upload: KrakenUpload) -> None:
            if data:
                await self._checked("PATCH", upload.path, member=upload.member, content=data,
                                    headers={"Content-Range": f"0,{len(data)}"})

        await self._upload(namespace, digest, patch, through=through)

    @asynccontextmanager
    async def _abandoned_on_failure(self, upload: KrakenUpload) -> AsyncIterator[None]:
        """Around the PATCHes and PUT of a Kraken upload: when they fail, the session is
        cancelled, so that it does not hold one of the origin's bounded sessions."""
        try:
            yield
        except BaseException:
            await self.at(upload.member).abandon(upload.uid, upload.namespace)
            raise

    # -- sessions whose digest comes at the end (the proxy's Docker pushes) -------------------
    # The digest is known only at the end, so a session opens at any live origin; with a ring of
    # more than one, its id carries a tag naming that origin (8 hex digits after a dot), which any
    # client of the same ring reads back. That origin replicates the committed blob to its owners.

    def _tagged(self) -> bool:
        return self.ring.name is not None or len(self.ring.members) > 1

    def _session(self, uid: str) -> tuple[Address | None, str]:
        """The origin holding session ``uid`` (None: this client's only one) and the session's path."""
        uid, dot, tag = uid.partition(".")
        member = None
        if dot or self._tagged():
            member = next((m for m in self.ring.members if _tag(m) == tag), None)
            if member is None:
                raise SwarmregError(BLOB_UPLOAD_UNKNOWN, detail={"uid": f"{uid}.{tag}"[:100]})
        if not UPLOAD_ID.fullmatch(uid):  # never let a client's id steer the URL
            raise SwarmregError(BLOB_UPLOAD_UNKNOWN, detail={"uid": uid[:100]})
        return member, session_path(uid)

    async def open_session(self, namespace: str, digest: Digest | None = None) -> str:
        """A new upload session in ``namespace``, at the first live owner of ``digest`` when it is
        known already (a monolithic push), else at the first live origin of a random key (sessions
        spread over the live origins); returns its id."""
        response = await self._checked("POST", SESSIONS, key=digest or Digest.of(os.urandom(16)),
                                       params={"namespace": namespace})
        uid = response.headers["location"]
        return f"{uid}.{_tag(response.extensions[MEMBER])}" if self._tagged() else uid

    async def append(self, uid: str, namespace: str, chunks: AsyncIterable[bytes], length: int | None) -> int:
        """Stream ``chunks`` onto the end of the session; returns the bytes it now holds."""
        member, path = self._session(uid)
        headers = {"Content-Length": str(length)} if length is not None else {}
        response = await self._checked("PATCH", path, member=member, params={"namespace": namespace},
                                       content=chunks, headers=headers)
        return int(response.headers[UPLOAD_SIZE])

    async def status(self, uid: str, namespace: str) -> int:
        """The bytes the session holds."""
        member, path = self._session(uid)
        response = await self._checked("GET", path, member=member, params={"namespace": namespace})
        return int(response.headers[UPLOAD_SIZE])

    async def finish(self, uid: str, namespace: str, digest: Digest, *, through: bool = True) -> int:
        """Commit the session as ``digest`` (DIGEST_INVALID if it does not match); returns the size.
        In a ring, the session's origin then replicates the blob to its owners (and reads of it
        ask the other origins after its owners)."""
        member, path = self._session(uid)
        response = await self._checked("PUT", path, member=member, params={
            "namespace": namespace, "digest": str(digest), THROUGH: _flag(through)})
        return int(response.headers[BLOB_SIZE])

    async def cancel(self, uid: str, namespace: str) -> None:
        member, path = self._session(uid)
        await self._checked("DELETE", path, member=member, params={"namespace": namespace})

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

    # -- reads: each goes to the blob's origins in ring order, the next one after READ_NEXT_ON -----

    async def size(self, namespace: str, digest: Digest, *, local: bool = False) -> int | None:
        """The blob's size at the origin (or its backend), None when unknown; ``local``: in the
        origin's own store only."""
        response = await self._send("HEAD", blob_path(namespace, digest), key=digest, next_on=READ_NEXT_ON,
                                    params={LOCAL: "true"} if local else None)
        if response.status_code == 404:
            return None
        raise_for_error(response, "origin")
        return int(response.headers["content-length"])

    async def read(self, namespace: str, digest: Digest) -> bytes:
        """A small blob's bytes (a manifest)."""
        return (await self._checked("GET", blob_path(namespace, digest), key=digest, next_on=READ_NEXT_ON)).content

    async def hold(self, namespace: str, digest: Digest) -> None:
        """Make the origin hold (fetching it from its backend if needed, however long that takes)
        and seed the blob; a body opened afterwards then streams at once."""
        await self.metainfo(namespace, digest)

    async def metainfo(self, namespace: str, digest: Digest) -> OriginMetainfo:
        """The blob's torrent metainfo (the origin fetches and seeds the blob first); BLOB_UNKNOWN if it has none."""
        response = await self._checked("GET", blob_path(namespace, digest, METAINFO), key=digest,
                                       next_on=READ_NEXT_ON, timeout=self._fetch_timeout)
        return self._metainfo(response, digest)

    async def metainfo_or_pending(self, namespace: str, digest: Digest) -> OriginMetainfo | Pending:
        """The metainfo, or the blob's size while the origin fetches it and offers to stream it as
        it arrives (a relay: GET the blob from ``Pending.base``). Past the origin's relay limit, this
        waits for the metainfo as ``metainfo`` does."""
        response = await self._checked("GET", blob_path(namespace, digest, METAINFO), key=digest,
                                       next_on=READ_NEXT_ON, params={WAIT: "false"}, timeout=self._fetch_timeout)
        member: Address = response.extensions[MEMBER]
        if response.status_code == RELAY_PENDING:
            try:
                size = int(response.headers[BLOB_SIZE])
            except (KeyError, ValueError):
                size = -1
            if size <= 0:
                log.warning("origin %s offered a relay of %s without its size", member, digest)
                raise SwarmregError(BAD_GATEWAY, "origin offered a relay without the blob's size")
            return Pending(size, url_of(member, self._tls))
        return self._metainfo(response, digest)

    def _metainfo(self, response: httpx.Response, digest: Digest) -> OriginMetainfo:
        member: Address = response.extensions[MEMBER]
        try:
            return OriginMetainfo(response.content, response.headers[PEER_ID_HEADER],
                                  int(response.headers[PEER_PORT_HEADER]))
        except (KeyError, ValueError):
            log.warning("origin %s named no seeder for the metainfo of %s", member, digest)
            raise SwarmregError(BAD_GATEWAY, "origin named no seeder for the metainfo") from None

    async def open(self, namespace: str, digest: Digest, range_header: str | None = None, *,
                   local: bool = False) -> UpstreamBody:
        """Start streaming the blob (or the range); the body must be sent or closed. ``local``: only
        from the origin's own store (BLOB_UNKNOWN on a miss, which it then does not fetch)."""
        request = self._http.build_request("GET", blob_path(namespace, digest),
                                           headers={"Range": range_header} if range_header else None,
                                           params={LOCAL: "true"} if local else None,
                                           extensions=self._extensions(digest, None, READ_NEXT_ON))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unreachable("GET", request.url.path, error) from None
        if not response.is_success:
            await response.aread()
            await response.aclose()
            raise_for_error(response, "origin")
        return UpstreamBody(response)


async def _counted(body: AsyncIterable[bytes], sent: Callable[[int], None]) -> AsyncIterator[bytes]:
    """``body``'s chunks, each reported to ``sent`` once it went out."""
    async for data in body:
        yield data
        sent(len(data))


def _tag(member: Address) -> str:
    """The short name of an origin in the ids of the upload sessions it holds."""
    return xxhash.xxh32_hexdigest(str(member).encode())


def _has_request(error: httpx.HTTPError) -> bool:
    try:
        error.request  # noqa: B018 (raises RuntimeError when the error has none)
    except RuntimeError:
        return False
    return True
