"""The origin's HTTP API, with the endpoint shapes of Kraken's origin (its endpoint documentation)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any, Protocol

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.authz import ORIGIN_WRITERS, ClusterGuard
from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, SwarmregError
from swarmreg.http.app import PlainResponse, body_chunks, create_base_app
from swarmreg.http.identity import guard_writes, is_write
from swarmreg.http.ranges import parse_upload_range
from swarmreg.http.responses import OpenRange, blob_response, json_response
from swarmreg.http.routes import add_health_route, add_status_route
from swarmreg.names import validate_namespace
from swarmreg.origin.wire import (
    BLOB_ROUTE,
    BLOB_SIZE,
    DRY_RUN,
    GC,
    LOCAL,
    METAINFO,
    METAINFO_TYPE,
    PEER_ID_HEADER,
    PEER_PORT_HEADER,
    RELAY_PENDING,
    REPLICA,
    SESSIONS,
    THROUGH,
    UPLOAD_ROUTE,
    UPLOAD_SIZE,
    UPLOADS,
    WAIT,
)
from swarmreg.store.files import Body, ByteRange
from swarmreg.store.uploads import Upload
from swarmreg.swarm.metainfo import Metainfo

if TYPE_CHECKING:
    from swarmreg.node import Node


class Origin(Protocol):
    """What the origin's routes ask of the origin service."""

    node: Node  # its daemon's status figures (GET /status)
    idle_timeout: float

    async def start_upload(self, namespace: str, digest: Digest, *, replica: bool = False) -> str: ...

    async def open_session(self, namespace: str) -> Upload: ...

    def upload(self, uid: str, namespace: str, digest: Digest | None = None) -> Upload: ...

    async def write_upload(self, upload: Upload, where: ByteRange | None, chunks: AsyncIterable[bytes]) -> None: ...

    async def commit_upload(self, upload: Upload, digest: Digest, *, through: bool, replica: bool = False) -> int: ...

    async def cancel_upload(self, upload: Upload) -> None: ...

    async def stat(self, namespace: str, digest: Digest, *, local: bool = False) -> int: ...

    async def serve_blob(self, namespace: str, digest: Digest, *, local: bool = False) -> tuple[int, OpenRange]: ...

    async def metainfo_or_pending(self, namespace: str, digest: Digest) -> Metainfo | int: ...

    async def open_blob(self, namespace: str, digest: Digest, start: int, end: int) -> Body: ...

    async def metainfo(self, namespace: str, digest: Digest) -> Metainfo: ...

    def seeder(self) -> tuple[str, int]: ...

    def stats(self, peers: bool) -> dict[str, Any]: ...

    async def collect_garbage(self, *, dry_run: bool) -> dict[str, Any]: ...


def _parse_bool(name: str, value: str | None) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise SwarmregError(BAD_REQUEST, f"query parameter {name} must be true or false", {name: value})


def _upload_request() -> bool:
    # A session's status is part of an upload too: only the writer has a use for it.
    return (is_write() or request.path.startswith(f"{SESSIONS}/")
            or (request.url_rule is not None and request.url_rule.rule == UPLOAD_ROUTE))


def create_origin_app(origin: Origin, guard: ClusterGuard | None = None) -> QuartTrio:
    """The origin's Quart app, serving ``origin``; uploads and deletes are for the proxy and
    origin roles when ``guard`` checks writers."""
    app = create_base_app("origin")
    guard_writes(app, guard or ClusterGuard(), ORIGIN_WRITERS, "uploading to the origin", _upload_request)
    add_health_route(app)
    add_status_route(app, origin.node, origin.stats)

    def body() -> AsyncIterable[bytes]:
        return body_chunks(request.body, origin.idle_timeout)

    def through() -> bool:
        return _parse_bool(THROUGH, request.args.get(THROUGH))

    @app.post(f"{BLOB_ROUTE}{UPLOADS}")
    async def start_upload(namespace: str, digest: str) -> Response:
        uid = await origin.start_upload(validate_namespace(namespace), Digest.parse(digest),
                                        replica=_parse_bool(REPLICA, request.args.get(REPLICA)))
        return PlainResponse("", status=200, headers={"Location": uid})

    def size_header(upload: Upload) -> dict[str, str]:
        return {UPLOAD_SIZE: str(upload.meta.size)}

    @app.get(UPLOAD_ROUTE)
    async def upload_status(namespace: str, digest: str, uid: str) -> Response:
        """Where the upload stands: the next chunk starts at UPLOAD_SIZE (how a push resumes)."""
        return PlainResponse("", status=204, headers=size_header(
            origin.upload(uid, validate_namespace(namespace), Digest.parse(digest))))

    @app.patch(UPLOAD_ROUTE)
    async def patch_upload(namespace: str, digest: str, uid: str) -> Response:
        upload = origin.upload(uid, validate_namespace(namespace), Digest.parse(digest))
        await origin.write_upload(upload, parse_upload_range(request.headers.get("Content-Range")), body())
        return PlainResponse("", status=200)

    @app.put(UPLOAD_ROUTE)
    async def commit_upload(namespace: str, digest: str, uid: str) -> Response:
        parsed = Digest.parse(digest)
        upload = origin.upload(uid, validate_namespace(namespace), parsed)
        size = await origin.commit_upload(upload, parsed, through=through(),
                                          replica=_parse_bool(REPLICA, request.args.get(REPLICA)))
        return PlainResponse("", status=200, headers={"Docker-Content-Digest": str(parsed), BLOB_SIZE: str(size)})

    # Sessions whose digest is known only at the end, for the proxy's Docker pushes: the
    # bytes stream through the proxy straight into the origin, stored and hashed once.
    def session() -> Upload:
        return origin.upload((request.view_args or {})["uid"],
                             validate_namespace(request.args.get("namespace", "")))

    @app.post(SESSIONS)
    async def open_session() -> Response:
        upload = await origin.open_session(validate_namespace(request.args.get("namespace", "")))
        return PlainResponse("", status=200, headers={"Location": upload.uid, **size_header(upload)})

    @app.patch(f"{SESSIONS}/<uid>")
    async def append_to_session(uid: str) -> Response:
        upload = session()
        content_range = request.headers.get("Content-Range")
        where = parse_upload_range(content_range) if content_range else None  # None: append
        await origin.write_upload(upload, where, body())
        return PlainResponse("", status=200, headers=size_header(upload))

    @app.get(f"{SESSIONS}/<uid>")
    async def session_status(uid: str) -> Response:
        return PlainResponse("", status=204, headers=size_header(session()))

    @app.put(f"{SESSIONS}/<uid>")
    async def commit_session(uid: str) -> Response:
        upload = session()
        digest = Digest.parse(request.args.get("digest", ""))
        size = await origin.commit_upload(upload, digest, through=through())
        return PlainResponse("", status=200, headers={"Docker-Content-Digest": str(digest), BLOB_SIZE: str(size)})

    @app.delete(f"{SESSIONS}/<uid>")
    async def cancel_session(uid: str) -> Response:
        await origin.cancel_upload(session())
        return PlainResponse("", status=204)

    @app.get(f"{BLOB_ROUTE}{METAINFO}")
    async def get_metainfo(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        wait = request.args.get(WAIT)
        if wait is None or _parse_bool(WAIT, wait):
            metainfo = await origin.metainfo(namespace, parsed)
        else:
            answer = await origin.metainfo_or_pending(namespace, parsed)
            if isinstance(answer, int):
                return PlainResponse("", status=RELAY_PENDING, headers={BLOB_SIZE: str(answer)})
            metainfo = answer
        peer_id, port = origin.seeder()
        return PlainResponse(metainfo.raw, content_type=METAINFO_TYPE,
                        headers={PEER_ID_HEADER: peer_id, PEER_PORT_HEADER: str(port)})

    @app.post(GC)
    async def collect_garbage() -> Response:
        report = await origin.collect_garbage(dry_run=_parse_bool(DRY_RUN, request.args.get(DRY_RUN)))
        return json_response(report)

    @app.route(BLOB_ROUTE, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        range_header = request.headers.get("Range")
        if request.method == "HEAD":
            size = await origin.stat(namespace, parsed, local=_parse_bool(LOCAL, request.args.get(LOCAL)))
            return await blob_response(parsed, size, range_header, None)
        # On a miss, the fetch from the backend streams out as it arrives (unless asked for local only).
        size, open_range = await origin.serve_blob(namespace, parsed,
                                                   local=_parse_bool(LOCAL, request.args.get(LOCAL)))
        return await blob_response(parsed, size, range_header, open_range)

    return app
