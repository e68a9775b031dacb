"""The origin's HTTP API, with the endpoint shapes of Kraken's origin (Kraken's endpoint documentation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import request
from quart_trio import QuartTrio

from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, SwarmregError
from swarmreg.http.app import PlainResponse as Response
from swarmreg.http.app import body_chunks, create_base_app
from swarmreg.http.ranges import parse_upload_range
from swarmreg.http.responses import blob_response
from swarmreg.names import validate_namespace
from swarmreg.origin.client import UPLOAD_SIZE
from swarmreg.store.uploads import Upload
from swarmreg.swarm.stats import PEER_ID_HEADER, PEER_PORT_HEADER, add_stats_route

if TYPE_CHECKING:
    from swarmreg.origin.service import OriginService

BLOB = "/namespace/<path:namespace>/blobs/<digest>"


def _parse_bool(name: str, value: str | None) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise SwarmregError(BAD_REQUEST, f"query parameter {name} must be true or false", {name: value})


def create_origin_app(origin: OriginService) -> QuartTrio:
    """The origin's Quart app, serving ``origin``."""
    app = create_base_app("origin")
    idle_timeout = origin.config.http.idle_timeout

    @app.get("/health")
    async def health() -> Response:
        return Response("OK\n")

    @app.post(f"{BLOB}/uploads")
    async def start_upload(namespace: str, digest: str) -> Response:
        uid = await origin.start_upload(validate_namespace(namespace), Digest.parse(digest))
        return Response("", status=200, headers={"Location": uid})

    @app.patch(f"{BLOB}/uploads/<uid>")
    async def patch_upload(namespace: str, digest: str, uid: str) -> Response:
        upload = origin.uploads.get(uid, validate_namespace(namespace), Digest.parse(digest))
        where = parse_upload_range(request.headers.get("Content-Range"))
        await origin.uploads.write(upload, where, body_chunks(request.body, idle_timeout))
        return Response("", status=200)

    @app.put(f"{BLOB}/uploads/<uid>")
    async def commit_upload(namespace: str, digest: str, uid: str) -> Response:
        parsed = Digest.parse(digest)
        upload = origin.uploads.get(uid, validate_namespace(namespace), parsed)
        through = _parse_bool("through", request.args.get("through"))
        size = await origin.commit_upload(upload, parsed, through=through)
        return Response("", status=200, headers={"Docker-Content-Digest": str(parsed),
                                                  "Blob-Size": str(size)})

    # Sessions whose digest is known only at the end, for the proxy's Docker pushes: the
    # bytes stream through the proxy straight into the origin, stored and hashed once.
    def session() -> Upload:
        return origin.uploads.get(request.view_args["uid"], validate_namespace(request.args.get("namespace", "")))

    def size_header(upload: Upload) -> dict[str, str]:
        return {UPLOAD_SIZE: str(upload.meta.size)}

    @app.post("/uploads")
    async def open_session() -> Response:
        upload = await origin.uploads.create(validate_namespace(request.args.get("namespace", "")))
        return Response("", status=200, headers={"Location": upload.uid, **size_header(upload)})

    @app.patch("/uploads/<uid>")
    async def append_to_session(uid: str) -> Response:
        upload = session()
        content_range = request.headers.get("Content-Range")
        where = parse_upload_range(content_range) if content_range else None  # None: append
        await origin.uploads.write(upload, where, body_chunks(request.body, idle_timeout))
        return Response("", status=200, headers=size_header(upload))

    @app.get("/uploads/<uid>")
    async def session_status(uid: str) -> Response:
        return Response("", status=204, headers=size_header(session()))

    @app.put("/uploads/<uid>")
    async def commit_session(uid: str) -> Response:
        upload = session()
        digest = Digest.parse(request.args.get("digest", ""))
        size = await origin.commit_upload(upload, digest, through=_parse_bool("through", request.args.get("through")))
        return Response("", status=200, headers={"Docker-Content-Digest": str(digest), "Blob-Size": str(size)})

    @app.delete("/uploads/<uid>")
    async def cancel_session(uid: str) -> Response:
        await origin.uploads.cancel(session())
        return Response("", status=204)

    @app.get(f"{BLOB}/metainfo")
    async def get_metainfo(namespace: str, digest: str) -> Response:
        metainfo = await origin.metainfo(validate_namespace(namespace), Digest.parse(digest))
        engine = origin.engine
        assert engine.address is not None
        return Response(metainfo.raw, content_type="application/x-bittorrent", headers={
            PEER_ID_HEADER: engine.peer_id, PEER_PORT_HEADER: str(engine.address.port)})

    add_stats_route(app, origin.engine)

    @app.route(BLOB, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        if request.method == "HEAD":
            local = _parse_bool("local", request.args.get("local"))
            size = await origin.stat(namespace, parsed, local=local)
            return blob_response(parsed, size, None, request.headers.get("Range"))
        body, size = await origin.open_blob(namespace, parsed)
        return blob_response(parsed, size, body, request.headers.get("Range"))

    return app
