"""IndexClient: how the proxy and the agents reach the index's HTTP API.

Errors the index answers come back as SwarmregError with the same registered code; an index
that cannot be reached (after a few retries) raises UNAVAILABLE with the reason.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from swarmreg.authz import bearer_headers
from swarmreg.cluster.ring import Ring
from swarmreg.cluster.transport import PLACEHOLDER, RingTransport, url_of
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, BLOB_UNKNOWN, MANIFEST_UNKNOWN, UNAVAILABLE, ErrorCode, SwarmregError
from swarmreg.http.client import envelope_error, transport_reason
from swarmreg.index.validate import validate_repository, validate_tag
from swarmreg.index.wire import (
    ADMIN_BLOBS,
    ADMIN_IMAGES,
    ADMIN_MANIFESTS,
    ADMIN_PRUNE,
    ADMIN_REPLICATION,
    BLOB_SIZE,
    BLOBS,
    CATALOG,
    CLIENT_TIMEOUT,
    MANIFESTS,
    MOUNT,
    MOUNT_FROM,
    REFERRERS,
    RENEW,
    pending_path,
    record_path,
    tag_path,
    tags_path,
)

log = logging.getLogger(__name__)
# Seconds a failed push waits to clear its note at the index (else the note expires by itself).
CLEAR_WAIT = 5.0

# Failures to reach the index that are worth another try: nothing was processed, or the
# connection dropped (every index call is idempotent, so a repeat is harmless).
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
              httpx.WriteError, httpx.PoolTimeout)


def _base_url(address: Address | str, scheme: str = "http") -> str:
    if isinstance(address, Address):
        return f"{scheme}://{address}"
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    return f"{scheme}://{Address.parse(address)}"


def _digest(digest: Digest | str) -> str:
    return str(digest if isinstance(digest, Digest) else Digest.parse(digest))


def _next(body: Mapping[str, Any]) -> dict[str, Any] | None:
    return body.get("next")


class IndexClient:
    """An httpx client for one index; use as ``async with IndexClient(address) as index:``.

    ``address`` is an Address, ``"host:port"``, a base URL, or a ring of indexes (swarmreg.cluster:
    every request goes to the first live member, the same for every client, and to the next one
    when that cannot be reached); ``tls`` is the cluster's client
    context (HTTPS with this node's certificate) or None, ``secret`` the cluster secret (sent as
    a bearer token). Names are checked here before a
    request is made, with the index's own error codes.
    """

    def __init__(self, address: Address | str | Ring, *, timeout: float = CLIENT_TIMEOUT,
                 connect_timeout: float = 5.0, attempts: int = 3, backoff: float = 0.2,
                 transport: httpx.AsyncBaseTransport | None = None, tls: ssl.SSLContext | None = None,
                 secret: str = "") -> None:
        if isinstance(address, Ring):
            transport = RingTransport(address, verify=tls or True, budget=timeout)
            address = url_of(Address(PLACEHOLDER, 0), tls is not None)
        self.base_url = _base_url(address, "https" if tls else "http")
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, verify=tls or True,
                                       headers=bearer_headers(secret),
                                       timeout=httpx.Timeout(timeout, connect=connect_timeout))

    async def __aenter__(self) -> IndexClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- transport -------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, missing: ErrorCode | None = None, retry: bool = True,
                       **kwargs: Any) -> httpx.Response | None:
        """The response to a request, None for a 404 of ``missing``; other errors raise SwarmregError.
        Without ``retry`` only a failure to connect is tried again (nothing reached the index)."""
        response: httpx.Response | None = None
        reason = kind = ""
        for attempt in range(self.attempts):
            if attempt:
                await trio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._http.request(method, path, **kwargs)
                break
            except _RETRYABLE as error:
                reason, kind = transport_reason(error), type(error).__name__
                log.debug("index %s %s failed (attempt %d): %s", method, path, attempt + 1, reason)
                if not retry and not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                    break
            except httpx.TransportError as error:  # a timeout: the index is there but too slow
                reason, kind = transport_reason(error), type(error).__name__
                break
        if response is None:  # the exception's text and the address are logged, only its type answered
            log.warning("index %s: %s %s failed: %s", self.base_url, method, path, reason)
            raise SwarmregError(UNAVAILABLE, f"index unavailable: {kind}")
        if response.status_code < 400:
            return response
        answered = envelope_error(response, f"index {self.base_url}")
        if missing is not None and response.status_code == 404 and (answered is None or answered.code is missing):
            return None  # (a HEAD answer has no body to name its code)
        if answered is None:
            log.warning("index %s: %s %s answered %d: %r", self.base_url, method, path, response.status_code,
                        response.text[:200])
            answered = SwarmregError(BAD_GATEWAY, f"index answered {response.status_code}",
                                     {"status": response.status_code})
        raise answered

    async def health(self) -> bool:
        """True when the index answers its health check."""
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    # -- tags --------------------------------------------------------------------------------

    async def put_tag(self, repository: str, tag: str, digest: Digest | str) -> None:
        """Point ``tag`` at ``digest`` (MANIFEST_UNKNOWN unless that manifest is in the repository)."""
        await self._request("PUT", self._tag_path(repository, tag), json={"digest": _digest(digest)})

    async def get_tag(self, repository: str, tag: str) -> str | None:
        """The digest (``sha256:...``) the tag points at, or None."""
        response = await self._request("GET", self._tag_path(repository, tag), missing=MANIFEST_UNKNOWN)
        return None if response is None else response.json()["digest"]

    async def delete_tag(self, repository: str, tag: str) -> None:
        """Remove the tag (MANIFEST_UNKNOWN if there is none)."""
        await self._request("DELETE", self._tag_path(repository, tag))

    async def list_tags(self, repository: str, n: int | None = None,
                        last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        """A page of the repository's tags and the next page's ``{"last", "n"}`` (None at the end).

        NAME_UNKNOWN for an unknown repository; ``n=None`` lists every tag.
        """
        validate_repository(repository)
        response = await self._request("GET", tags_path(repository), params=_page_params(n, last))
        assert response is not None
        body = response.json()
        return body["tags"], _next(body)

    async def catalog(self, n: int | None = None,
                      last: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
        """A page of repository names and the next page's ``{"last", "n"}`` (None at the end)."""
        response = await self._request("GET", CATALOG, params=_page_params(n, last))
        assert response is not None
        body = response.json()
        return body["repositories"], _next(body)

    # -- manifests ---------------------------------------------------------------------------

    async def put_manifest(self, repository: str, digest: Digest | str, *, media_type: str, size: int,
                           artifact_type: str | None = None, subject: Digest | str | None = None,
                           annotations: Mapping[str, str] | None = None, blobs: Sequence[Digest | str] = (),
                           children: Sequence[Digest | str] = (), pending: str | None = None) -> None:
        """Record a manifest in the repository (its content is a blob elsewhere) with the blobs it
        names, each of which must be linked there (else MANIFEST_BLOB_UNKNOWN), and its children;
        ends the push ``pending`` of its bytes (note_pending)."""
        body = {"media_type": media_type, "size": size, "artifact_type": artifact_type,
                "subject": None if subject is None else _digest(subject), "annotations": dict(annotations or {}),
                "blobs": [_digest(blob) for blob in blobs], "children": [_digest(child) for child in children],
                "pending": pending}
        # Non-ASCII as UTF-8, not \u escapes: the annotations then take no more bytes than in the
        # manifest, which keeps the record of any acceptable manifest within the index's body limit.
        try:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): only escaped
            content = json.dumps(body, separators=(",", ":")).encode()
        await self._request("PUT", self._path(repository, MANIFESTS, digest), content=content,
                            headers={"Content-Type": "application/json"})

    async def get_manifest(self, repository: str, digest: Digest | str) -> dict[str, Any] | None:
        """``{"digest", "media_type", "size", "artifact_type", "subject", "annotations", "created"}`` or None."""
        response = await self._request("GET", self._path(repository, MANIFESTS, digest), missing=MANIFEST_UNKNOWN)
        return None if response is None else response.json()

    async def delete_manifest(self, repository: str, digest: Digest | str) -> list[str]:
        """Remove the manifest and the tags pointing at it (returned); MANIFEST_UNKNOWN if unknown."""
        response = await self._request("DELETE", self._path(repository, MANIFESTS, digest))
        assert response is not None
        tags: list[str] = response.json()["deleted_tags"]
        return tags

    async def referrers(self, repository: str, digest: Digest | str,
                        artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors ``{mediaType, digest, size, artifactType, annotations}`` of the manifests whose
        subject is ``digest``, by digest; only those of ``artifact_type`` when given."""
        params = {"artifactType": artifact_type} if artifact_type else None
        response = await self._request("GET", self._path(repository, REFERRERS, digest), params=params)
        assert response is not None
        manifests: list[dict[str, Any]] = response.json()["manifests"]
        return manifests

    # -- blob links --------------------------------------------------------------------------

    async def link_blob(self, repository: str, digest: Digest | str, size: int, *, pending: str | None = None) -> None:
        """Make the blob visible in the repository; ends the push ``pending`` of it (note_pending)."""
        await self._request("PUT", self._path(repository, BLOBS, digest), json={"size": size, "pending": pending})

    # -- pushes under way ------------------------------------------------------------------------

    async def note_pending(self, digest: Digest | str, token: str) -> None:
        """Note that the push ``token`` (PENDING_TOKEN) is about to store ``digest`` at the origin:
        garbage collection keeps it until its link or record names ``token``, or clear_pending."""
        await self._request("PUT", pending_path(_digest(digest)), params={"token": token})

    async def clear_pending(self, digest: Digest | str, token: str) -> None:
        """The push ``token`` of ``digest`` failed: garbage collection need not keep it for it."""
        await self._request("DELETE", pending_path(_digest(digest)), params={"token": token})

    @asynccontextmanager
    async def pending(self, digest: Digest | str) -> AsyncIterator[str]:
        """A push of ``digest``: noted before the block (which stores it at the origin, then ends
        the note by passing the token yielded to link_blob or put_manifest), cleared if it fails."""
        token = secrets.token_hex(16)
        await self.note_pending(digest, token)
        try:
            yield token
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEAR_WAIT):
                try:
                    await self.clear_pending(digest, token)
                except SwarmregError:  # unreachable: the note expires on its own (PENDING_TTL)
                    pass
            raise

    async def blob_size(self, repository: str, digest: Digest | str) -> int | None:
        """The size of the blob linked in the repository, or None if it is not linked."""
        # A GET, not a HEAD: an error's envelope (an upstream's UPSTREAM_UNAVAILABLE) is in the body.
        response = await self._request("GET", self._path(repository, BLOBS, digest), missing=BLOB_UNKNOWN)
        return None if response is None else int(response.headers[BLOB_SIZE])

    async def unlink_blob(self, repository: str, digest: Digest | str) -> None:
        """Remove the blob's link from the repository (BLOB_UNKNOWN if it was not linked)."""
        await self._request("DELETE", self._path(repository, BLOBS, digest))

    # -- admin: pruning and lists (swarmreg.index.admin_routes) ------------------------------

    async def prune(self, type: str, *, duration: float = 0.0, expr: str | None = None, count: int | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        """Prune manifests (swarmreg.index.prune): ``type`` accessed, created or pattern, ``duration``
        seconds, ``expr`` comma-separated patterns, at most ``count`` (None: no limit); the report
        ``{"type", "dry_run", "count", "manifests": [...]}``."""
        body = {"type": type, "duration": duration, "expr": expr, "count": count, "dry_run": dry_run}
        # Not retried: a prune that reached the index and lost its answer must not run twice.
        response = await self._request("POST", ADMIN_PRUNE, json=body, retry=False)
        assert response is not None
        report: dict[str, Any] = response.json()
        return report

    async def list_images(self, *, pattern: str | None = None, digest: str | None = None,
                          count: int | None = None) -> list[dict[str, Any]]:
        """Tagged images with their manifests' fields and blobs (swarmreg.index.listing.list_images)."""
        return await self._list(ADMIN_IMAGES, "images", pattern=pattern, digest=digest, count=count)

    async def list_manifests(self, *, pattern: str | None = None, count: int | None = None) -> list[dict[str, Any]]:
        """Manifests with their tags, children and blobs (swarmreg.index.listing.list_manifests)."""
        return await self._list(ADMIN_MANIFESTS, "manifests", pattern=pattern, count=count)

    async def list_blobs(self, *, substr: str | None = None, count: int | None = None) -> list[dict[str, Any]]:
        """Blobs with their reference counts (swarmreg.index.listing.list_blobs)."""
        return await self._list(ADMIN_BLOBS, "blobs", substr=substr, count=count)

    async def replication_status(self, *, count: int | None = None) -> dict[str, Any]:
        """The replication queue, per remote and repository (swarmreg.index.wire.ADMIN_REPLICATION);
        at most ``count`` repositories (None: the index's default)."""
        response = await self._request("GET", ADMIN_REPLICATION, params={} if count is None else {"count": str(count)})
        assert response is not None
        status: dict[str, Any] = response.json()
        return status

    async def _list(self, path: str, field: str, **params: str | int | None) -> list[dict[str, Any]]:
        query = {name: str(value) for name, value in params.items() if value is not None}
        response = await self._request("GET", path, params=query)
        assert response is not None
        items: list[dict[str, Any]] = response.json()[field]
        return items

    async def renew_blob(self, repository: str, digest: Digest | str) -> int | None:
        """Renew the blob's link if it exists (a push found the layer present: garbage collection
        keeps it until the manifest PUT) and return its size; None if it is not linked."""
        response = await self._request("POST", self._path(repository, BLOBS, digest) + RENEW, missing=BLOB_UNKNOWN)
        return None if response is None else int(response.headers[BLOB_SIZE])

    async def mount_blob(self, source: str, repository: str, digest: Digest | str) -> int | None:
        """Link the blob in ``repository`` if ``source`` links it, in one transaction at the index
        (so a collection cannot remove it between the check and the link); its size, or None."""
        response = await self._request("POST", self._path(repository, BLOBS, digest) + MOUNT, missing=BLOB_UNKNOWN,
                                       params={MOUNT_FROM: validate_repository(source)})
        return None if response is None else int(response.headers[BLOB_SIZE])

    # -- paths -------------------------------------------------------------------------------

    @staticmethod
    def _tag_path(repository: str, tag: str) -> str:
        return tag_path(validate_repository(repository), validate_tag(tag))

    @staticmethod
    def _path(repository: str, kind: str, digest: Digest | str) -> str:
        return record_path(validate_repository(repository), kind, _digest(digest))


def _page_params(n: int | None, last: str | None) -> dict[str, str]:
    params = {}
    if n is not None:
        params["n"] = str(n)
    if last is not None:
        params["last"] = last
    return params
