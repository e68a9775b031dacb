"""The pull side of the registry API, served by the proxy and by every agent.

Tags and manifest metadata come from the index; bytes come from a Content source:
the origin over HTTP on the proxy, the swarm on an agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlencode

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.http.responses import blob_response, json_response
from swarmreg.oci.descriptor import Descriptor
from swarmreg.oci.manifest import referrers_index
from swarmreg.oci.pagination import parse_page_size
from swarmreg.registry.addressing import Addressed, address, serve, single_ns
from swarmreg.registry.lookup import IndexReader, has_repository, resolve
from swarmreg.registry.wire import (
    API_VERSION,
    BASE,
    BLOB_ROUTE,
    CATALOG_PATH,
    CONTENT_DIGEST,
    FILTERS_APPLIED,
    MANIFEST_ROUTE,
    NS,
    REFERRERS_ROUTE,
    TAGS_ROUTE,
    tags_path,
)
from swarmreg.store.files import Body


class Content(Protocol):
    """Where a registry port reads blob and manifest bytes."""

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The blob's size as this repository sees it; None when it is not there."""

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> Body:
        """A body for bytes [start, end) (never empty) of the blob of ``size`` bytes."""

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        """A manifest's exact bytes."""


@runtime_checkable
class ConfirmingContent(Content, Protocol):
    """A Content that a push's HEAD of a blob confirms (the proxy's: it renews the blob's link)."""

    async def confirm_blob(self, repository: str, digest: Digest) -> int | None:
        """The blob's size as ``blob_size`` gives it, its presence now confirmed; None when it is not there."""


def page_arguments() -> tuple[int | None, str | None]:
    """``n`` and ``last`` of a paginated list request."""
    return parse_page_size(request.args.get("n")), request.args.get("last")


def next_link(path: str, following: dict[str, Any] | None, keep: dict[str, str] | None = None) -> dict[str, str]:
    """The Link header distribution sends when a page is not the last one; ``keep`` are query
    parameters the next request needs as well (containerd's ``ns``)."""
    if not following:
        return {}
    return {"Link": f'<{path}?{urlencode({**(keep or {}), **following})}>; rel="next"'}


def request_address(name: str, default_registry: str = "") -> Addressed:
    """The repository this request means: its path's ``name`` with its ``?ns=`` (see
    swarmreg.registry.addressing); NAME_INVALID for a malformed name or ns."""
    return address(name, single_ns(request.args.getlist(NS)), default_registry)


async def content_response(content: Content, repository: str, digest: Digest) -> Response:
    """The answer to this GET or HEAD of a blob from ``content``; BLOB_UNKNOWN when it is not there."""
    if request.method == "HEAD" and isinstance(content, ConfirmingContent):
        size = await content.confirm_blob(repository, digest)
    else:
        size = await content.blob_size(repository, digest)
    if size is None:
        raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})

    async def open_range(start: int, end: int) -> Body:
        return await content.open_blob(repository, digest, size, start, end)

    return await blob_response(digest, size, request.headers.get("Range"),
                               None if request.method == "HEAD" else open_range)


# Per request: which repositories the catalog may name (None: all of them).
CatalogFilter = Callable[[], Callable[[str], bool] | None]
# How many names the filtered catalog reads from the index at a time.
_CATALOG_BATCH = 1000


async def filtered_catalog(index: IndexReader, n: int | None, last: str | None,
                           visible: Callable[[str], bool]) -> tuple[list[str], dict[str, Any] | None]:
    """A page of the ``visible`` repositories after ``last``: pagination counts only those, so
    every page is full until the last and the next page starts where this one ended."""
    if n == 0:
        return [], None
    names: list[str] = []
    cursor = last
    while True:
        page, following = await index.catalog(_CATALOG_BATCH, cursor)
        for name in page:
            if not visible(name):
                continue
            if n is not None and len(names) == n:  # one more exists: this page is not the last
                return names, {"last": names[-1], "n": n}
            names.append(name)
        if not following or not page:
            return names, None
        cursor = page[-1]


# Before a bare name is served from the default upstream: may the request pull this repository
# (raises the refusal if not)?
Authorize = Callable[[str], Awaitable[None]]


def add_read_routes(app: QuartTrio, index: IndexReader, content: Content,
                    catalog_filter: CatalogFilter | None = None, *, default_registry: str = "",
                    authorize: Authorize | None = None) -> None:
    """Register /v2/, manifests and blobs GET/HEAD, tags/list, _catalog and referrers on ``app``;
    ``catalog_filter`` narrows the catalog to what the request's user may see.

    Every route but the catalog reads its repository as clients send it (``?ns=``, the in-path
    upstream form, bare names with ``default_registry`` as the fallback upstream), by
    swarmreg.registry.addressing; ``authorize`` checks a pull of the fallback's repository.
    """

    async def served(addressed: Addressed, attempt: Callable[[str], Awaitable[Any]],
                     empty: Callable[[Any], bool] = lambda _: False) -> Any:
        return await serve(addressed, attempt,
                           has_repository=lambda repository: has_repository(index, repository),
                           authorize=authorize, empty=empty)

    @app.after_request
    async def _registry_headers(response: Response) -> Response:
        """The API version on every answer; a 204 without Content-Length (RFC 9110 8.6: "A server
        MUST NOT send a Content-Length header field in any response with a status code of ... 204")
        or a Content-Type for the content it does not have (Quart sets both)."""
        response.headers[API_VERSION[0]] = API_VERSION[1]
        if response.status_code == 204:
            del response.headers["Content-Length"]
            del response.headers["Content-Type"]
        return response

    @app.get(BASE)
    async def base() -> Response:
        return json_response({})

    @app.route(MANIFEST_ROUTE, methods=["GET", "HEAD"])
    async def get_manifest(name: str, reference: str) -> Response:
        addressed = request_address(name, default_registry)

        async def attempt(repository: str) -> tuple[Digest, dict[str, Any], bytes]:
            digest, meta = await resolve(index, repository, reference)
            body = b"" if request.method == "HEAD" else await content.manifest_bytes(repository, digest)
            return digest, meta, body

        digest, meta, body = await served(addressed, attempt)
        headers = {CONTENT_DIGEST: str(digest), "ETag": f'"{digest}"',
                   "Content-Length": str(meta["size"])}
        response = Response(body, content_type=meta["media_type"], headers=headers)
        response.headers["Content-Length"] = str(meta["size"])
        return response

    @app.route(BLOB_ROUTE, methods=["GET", "HEAD"])
    async def get_blob(name: str, digest: str) -> Response:
        addressed, parsed = request_address(name, default_registry), Digest.parse(digest)
        response: Response = await served(addressed, lambda repository: content_response(content, repository, parsed))
        return response

    @app.get(TAGS_ROUTE)
    async def list_tags(name: str) -> Response:
        addressed = request_address(name, default_registry)
        n, last = page_arguments()
        tags, following = await served(addressed, lambda repository: index.list_tags(repository, n, last))
        # The name and the next page's link as the client addressed them (with its ns).
        return json_response({"name": addressed.name, "tags": tags},
                             headers=next_link(tags_path(addressed.name), following, addressed.query))

    @app.get(CATALOG_PATH)
    async def catalog() -> Response:
        n, last = page_arguments()
        visible = catalog_filter() if catalog_filter is not None else None
        if visible is None:
            repositories, following = await index.catalog(n, last)
        else:
            repositories, following = await filtered_catalog(index, n, last, visible)
        return json_response({"repositories": repositories}, headers=next_link(CATALOG_PATH, following))

    @app.get(REFERRERS_ROUTE)
    async def referrers(name: str, digest: str) -> Response:
        addressed, parsed = request_address(name, default_registry), Digest.parse(digest)
        artifact_type = request.args.get("artifactType")
        found = await served(addressed, lambda repository: index.referrers(repository, parsed, artifact_type),
                             empty=lambda found: not found)
        descriptors = [Descriptor(entry["mediaType"], Digest.parse(entry["digest"]), entry["size"],
                                  entry.get("artifactType"), entry.get("annotations") or {}) for entry in found]
        headers = {FILTERS_APPLIED: "artifactType"} if artifact_type else {}
        return Response(referrers_index(descriptors), content_type="application/vnd.oci.image.index.v1+json",
                        headers=headers)
