"""How the origin's garbage collector reaches the index: the mark and the backfill of legacy
manifests' references (swarmreg.index.gc serves them)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import httpx

from swarmreg.authz import bearer_headers
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, UNAVAILABLE, SwarmregError
from swarmreg.http.client import raise_for_error, transport_reason
from swarmreg.index.wire import (
    GC_DRY_RUN,
    GC_GRACE,
    GC_LINKS_KEPT,
    GC_LINKS_REMOVED,
    GC_LIVE,
    GC_MARK,
    GC_REFS,
    GC_RELEASED,
    GC_UNKNOWN,
)

# A mark of a large index takes a while (the live set of 200,000 manifests and blobs is spooled
# before it is sent).
MARK_WAIT = 600.0


@attrs.frozen
class MarkResult:
    """The live set (digests as text) and the number of stale links the mark removed."""

    live: frozenset[str]
    links_removed: int
    # Why the index removed no link and counted every one live (its disk is full), or "".
    links_kept: str = ""
    # Digests a manifest's delete released (not live), and when (POSIX seconds, the index's clock).
    released: dict[str, float] = attrs.field(factory=dict)


class IndexMarker:
    """An httpx client of the index's collector routes; use as ``async with IndexMarker(address):``."""

    def __init__(self, address: Address, *, tls: ssl.SSLContext | None = None, secret: str = "") -> None:
        self._http = httpx.AsyncClient(base_url=f"{'https' if tls else 'http'}://{address}", verify=tls or True,
                                       headers=bearer_headers(secret), timeout=httpx.Timeout(MARK_WAIT, connect=5))

    async def __aenter__(self) -> IndexMarker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def mark(self, grace: float, *, dry_run: bool) -> MarkResult:
        """Mark (see swarmreg.index.gc): the live set, read whole and counted, or an error."""
        try:
            async with self._http.stream("POST", GC_MARK, params={
                    GC_GRACE: repr(grace), GC_DRY_RUN: "true" if dry_run else "false"}) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_error(response, "index")
                live: set[str] = set()
                released: dict[str, float] = {}
                tail = b""
                async for chunk in response.aiter_bytes():
                    lines = (tail + chunk).split(b"\n")
                    tail = lines.pop()
                    for line in lines:
                        if line.startswith(b"@"):
                            at, _, digest = line[1:].decode().partition(" ")
                            released[digest] = _seconds(at)
                        else:
                            live.add(line.decode())
                expected = int(response.headers[GC_LIVE])
                expected_released = int(response.headers.get(GC_RELEASED, "0"))
                removed = int(response.headers[GC_LINKS_REMOVED])
                kept = response.headers.get(GC_LINKS_KEPT, "")[:100]
        except httpx.HTTPError as error:
            raise SwarmregError(UNAVAILABLE, f"index unavailable for the mark: {transport_reason(error)}") from None
        # A live set cut short would sweep live blobs: it must be exactly what the index counted.
        if tail or len(live) != expected or len(released) != expected_released:
            raise SwarmregError(BAD_GATEWAY, f"the index's live set has {len(live)} digests, it announced {expected}")
        return MarkResult(frozenset(live), removed, kept, released)

    async def unknown_manifests(self, last: str = "", n: int = 1000) -> list[dict[str, Any]]:
        """A page of ``{"repository", "digest", "media_type"}`` whose references are unknown, after
        ``last`` ("<repository>@<digest>")."""
        response = await self._call("GET", GC_UNKNOWN, params={"last": last, "n": str(n)})
        manifests: list[dict[str, Any]] = response.json()["manifests"]
        return manifests

    async def record_references(self, repository: str, digest: Digest, blobs: Sequence[Digest],
                                children: Sequence[Digest]) -> None:
        """Record a legacy manifest's references (MANIFEST_UNKNOWN if it was deleted meanwhile)."""
        await self._call("POST", GC_REFS, json={"repository": repository, "digest": str(digest),
                                                "blobs": [str(d) for d in blobs],
                                                "children": [str(d) for d in children]})

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise SwarmregError(UNAVAILABLE, f"index unavailable: {transport_reason(error)}") from None
        raise_for_error(response, "index")
        return response


def _seconds(link_time: str) -> float:
    """A link time of the index (``2026-12-03T14:50:46.123Z``) in POSIX seconds; malformed: never (0)."""
    try:
        return datetime.fromisoformat(link_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
