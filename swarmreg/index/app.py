"""The index's HTTP API: JSON over the store, errors in the registry's JSON envelope.

Repository names contain slashes, so every route takes ``<path:repository>``; swarmreg.index.wire
says how paths that could be read two ways are read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlencode

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.routing import BaseConverter

from swarmreg.authz import INDEX_WRITERS, ClusterGuard
from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, BLOB_UNKNOWN, MANIFEST_UNKNOWN, TOO_LARGE, SwarmregError
from swarmreg.http.app import body_chunks, create_base_app
from swarmreg.http.identity import guard_writes, is_write
from swarmreg.http.responses import empty_response, json_response
from swarmreg.http.routes import add_health_route
from swarmreg.index.access_times import AccessTimes
from swarmreg.index.admin_routes import add_admin_routes
from swarmreg.index.gc import add_gc_routes, is_gc_path
from swarmreg.index.pullthrough import PullThrough
from swarmreg.index.store import IndexStore, Page
from swarmreg.index.validate import (
    check_annotations,
    check_body,
    check_media_type,
    check_size,
    parse_digest,
    parse_page_size,
    query_text,
    validate_repository,
    validate_tag,
)
from swarmreg.index.wire import (
    BLOB_SIZE,
    BLOBS,
    CATALOG,
    MANIFEST_MEDIA_TYPE,
    MANIFEST_SIZE,
    MANIFESTS,
    MAX_BODY_SIZE,
    PENDING_ROUTE,
    PENDING_TOKEN,
    PENDING_TTL,
    REFERRERS,
)
from swarmreg.index.wire import REPOSITORY_ROUTE as REPOSITORY


class DigestSegment(BaseConverter):
    """A path segment with a colon: what can be a digest (checked in full by the route)."""

    regex = "[^/]*:[^/]*"


async def _json_body(idle_timeout: float) -> Any:
    data = bytearray()
    async for chunk in body_chunks(request.body, idle_timeout):
        data += chunk
        if len(data) > MAX_BODY_SIZE:
            raise SwarmregError(TOO_LARGE, f"an index request body is at most {MAX_BODY_SIZE} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise SwarmregError(BAD_REQUEST, "the body must be JSON") from None


def _paginated(page: Page, n: int | None, link_path: str, body: dict[str, Any]) -> Response:
    """A listing with distribution's ``Link: <path?last=..&n=..>; rel="next"`` when more follow."""
    headers = {}
    body["next"] = None
    if page.next_last is not None and n is not None:
        headers["Link"] = f'<{link_path}?{urlencode({"last": page.next_last, "n": n})}>; rel="next"'
        body["next"] = {"last": page.next_last, "n": n}
    return json_response(body, headers=headers)


def _tag_unknown(repository: str, tag: str) -> SwarmregError:
    return SwarmregError(MANIFEST_UNKNOWN, "tag unknown", {"repository": repository, "tag": tag})


class Replicating(Protocol):
    """Where a tag put is sent on (swarmreg.index.replicator.Replicator)."""

    @property
    def remotes(self) -> tuple[str, ...]: ...

    def remotes_for(self, repository: str) -> tuple[str, ...]: ...

    def wake(self, remotes: Sequence[str]) -> None: ...


def create_index_app(store: IndexStore, *, idle_timeout: float = 60.0,
                     guard: ClusterGuard | None = None, pull_through: PullThrough | None = None,
                     access_times: AccessTimes | None = None, replication: Replicating | None = None) -> QuartTrio:
    """The index's Quart app, serving ``store``; a request body stalled for ``idle_timeout`` s fails.
    Writes (PUT, DELETE, POST) are for the proxy and index roles when ``guard`` checks writers. Reads of
    tags, manifests and blob links of upstream repositories go through ``pull_through``. GETs of
    manifest records and tags are pulls, noted in ``access_times``. A tag put is queued for the
    remote clusters ``replication`` names for its repository."""
    app = create_base_app("index")
    reads = pull_through or store
    pulled = access_times or AccessTimes(store)
    guard = guard or ClusterGuard()
    guard_writes(app, guard, INDEX_WRITERS, "writing to the index", lambda: is_write() and not is_gc_path())
    # "a//b" is a bad name, not a redirect to "a/b".
    app.url_map.merge_slashes = False
    app.url_map.converters["digest"] = DigestSegment

    add_health_route(app)
    add_gc_routes(app, store, reads, guard, partial(_json_body, idle_timeout))
    add_admin_routes(app, store, partial(_json_body, idle_timeout), before_prune=pulled.flush,
                     remotes=replication.remotes if replication is not None else ())

    # -- the catalog and tag lists ---------------------------------------------------------

    @app.get(CATALOG)
    async def catalog() -> Response:
        n = parse_page_size(request.args.get("n"))
        page = await store.catalog(n, query_text(request.args.get("last"), "last"))
        return _paginated(page, n, "/v2/_catalog", {"repositories": page.items})

    @app.get(f"{REPOSITORY}/tags")
    @app.get(f"{REPOSITORY}/tags/-/list")
    async def list_tags(repository: str) -> Response:
        validate_repository(repository)
        n = parse_page_size(request.args.get("n"))
        page = await store.list_tags(repository, n, query_text(request.args.get("last"), "last"))
        return _paginated(page, n, f"/v2/{repository}/tags/list", {"name": repository, "tags": page.items})

    # -- tags --------------------------------------------------------------------------------

    @app.route(f"{REPOSITORY}/tags/<tag>", methods=["GET", "HEAD", "PUT", "DELETE"])
    async def tag(repository: str, tag: str) -> Response:
        validate_repository(repository)
        validate_tag(tag)
        if request.method == "PUT":
            body = check_body(await _json_body(idle_timeout), {"digest"}, {"repository", "tag"})
            _check_echo(body, repository=repository, tag=tag)
            remotes = replication.remotes_for(repository) if replication is not None else ()
            if await store.put_tag(repository, tag, parse_digest(body["digest"]), replicate=remotes) and remotes:
                assert replication is not None
                replication.wake(remotes)
            return empty_response(201)
        if request.method == "DELETE":
            if not await store.delete_tag(repository, tag):
                raise _tag_unknown(repository, tag)
            return empty_response(202)
        digest = await reads.get_tag(repository, tag)
        if digest is None:
            raise _tag_unknown(repository, tag)
        if request.method == "HEAD":
            return empty_response(200, {"Docker-Content-Digest": str(digest)})
        pulled.touch(repository, digest)
        return json_response({"repository": repository, "tag": tag, "digest": str(digest)},
                             headers={"Docker-Content-Digest": str(digest)})

    # -- manifests ---------------------------------------------------------------------------

    @app.route(f"{REPOSITORY}/{MANIFESTS}/<digest:digest>", methods=["GET", "HEAD", "PUT", "DELETE"])
    async def manifest(repository: str, digest: str) -> Response:
        validate_repository(repository)
        parsed = parse_digest(digest)
        if request.method == "PUT":
            body = check_body(await _json_body(idle_timeout), {"media_type", "size"},
                              {"artifact_type", "subject", "annotations", "digest", "created", "blobs",
                               "children", "pending"})
            _check_echo(body, digest=str(parsed))
            artifact_type = body.get("artifact_type")
            subject = body.get("subject")
            await store.put_manifest(
                repository, parsed, media_type=check_media_type(body["media_type"], "media_type"),
                size=check_size(body["size"]),
                artifact_type=None if artifact_type is None else check_media_type(artifact_type, "artifact_type"),
                subject=None if subject is None else parse_digest(subject, "subject"),
                annotations=check_annotations(body.get("annotations")),
                blobs=_digests(body.get("blobs"), "blobs"), children=_digests(body.get("children"), "children"),
                pending=_token(body.get("pending")))
            return empty_response(201)
        if request.method == "DELETE":
            tags = await store.delete_manifest(repository, parsed)
            if tags is None:
                raise SwarmregError(MANIFEST_UNKNOWN, detail={"repository": repository, "digest": str(parsed)})
            return json_response({"deleted_tags": tags}, status=202)
        record = await reads.get_manifest(repository, parsed)
        if record is None:
            raise SwarmregError(MANIFEST_UNKNOWN, detail={"repository": repository, "digest": str(parsed)})
        headers = {"Docker-Content-Digest": str(parsed), MANIFEST_MEDIA_TYPE: record.media_type,
                   MANIFEST_SIZE: str(record.size)}
        if request.method == "HEAD":
            return empty_response(200, headers)
        pulled.touch(repository, parsed)
        return json_response(record.to_json(), headers=headers)

    @app.get(f"{REPOSITORY}/{REFERRERS}/<digest:digest>")
    async def referrers(repository: str, digest: str) -> Response:
        validate_repository(repository)
        subject = parse_digest(digest)
        artifact_type = query_text(request.args.get("artifactType"), "artifactType") or None
        records = await store.referrers(repository, subject, artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type is not None else {}
        return json_response({"manifests": [record.descriptor() for record in records]}, headers=headers)

    # -- blob links --------------------------------------------------------------------------

    @app.route(f"{REPOSITORY}/{BLOBS}/<digest:digest>", methods=["GET", "HEAD", "PUT", "DELETE"])
    async def blob(repository: str, digest: str) -> Response:
        validate_repository(repository)
        parsed = parse_digest(digest)
        if request.method == "PUT":
            body = check_body(await _json_body(idle_timeout), {"size"}, {"digest", "pending"})
            _check_echo(body, digest=str(parsed))
            await store.link_blob(repository, parsed, check_size(body["size"]), pending=_token(body.get("pending")))
            return empty_response(201)
        if request.method == "DELETE":
            if not await store.unlink_blob(repository, parsed):
                raise SwarmregError(BLOB_UNKNOWN, detail={"repository": repository, "digest": str(parsed)})
            return empty_response(202)
        size = await reads.blob_size(repository, parsed)
        if size is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"repository": repository, "digest": str(parsed)})
        headers = {BLOB_SIZE: str(size), "Docker-Content-Digest": str(parsed)}
        if request.method == "HEAD":
            return empty_response(200, headers)
        return json_response({"repository": repository, "digest": str(parsed), "size": size}, headers=headers)

    # -- pushes under way ----------------------------------------------------------------------

    @app.route(PENDING_ROUTE, methods=["PUT", "DELETE"])
    async def pending(digest: str) -> Response:
        parsed = parse_digest(digest)
        token = _token(request.args.get("token"))
        if token is None:
            raise SwarmregError(BAD_REQUEST, "the token query parameter is required")
        if request.method == "DELETE":
            await store.clear_pending(parsed, token)
        else:
            await store.note_pending(parsed, token, PENDING_TTL)
        return empty_response(204)

    return app


def _token(value: Any) -> str | None:
    """A push's token (PENDING_TOKEN), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or not PENDING_TOKEN.fullmatch(value):
        raise SwarmregError(BAD_REQUEST, "pending must be a push token (32 hex digits)")
    return value


def _digests(value: Any, field: str) -> list[Digest]:
    """A JSON list of digests (absent: none)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SwarmregError(BAD_REQUEST, f"{field} must be a list of digests")
    return [parse_digest(item, field) for item in value]


def _check_echo(body: Any, **expected: str) -> None:
    """Fields a body may repeat from the URL (as a GET returned them) must match it."""
    for field, value in expected.items():
        if field in body and body[field] != value:
            raise SwarmregError(BAD_REQUEST, f"{field} in the body does not match the URL",
                                {field: body[field]})
