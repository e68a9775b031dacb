"""The proxy's registry API: everything an agent serves, plus pushes and content management."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import attrs
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.datastructures import MultiDict

from swarmreg.digest import CANONICAL, Digest
from swarmreg.errors import (
    BAD_REQUEST,
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    NOT_FOUND,
    RANGE_INVALID,
    TOO_LARGE,
    SwarmregError,
)
from swarmreg.http.app import body_chunks, create_base_app
from swarmreg.http.ranges import parse_chunk_range
from swarmreg.http.responses import empty_response, json_response
from swarmreg.http.routes import add_health_route
from swarmreg.index.client import IndexClient
from swarmreg.oci.manifest import manifest_too_large, parse_manifest
from swarmreg.oci.names import parse_reference
from swarmreg.origin.client import OriginClient
from swarmreg.proxy.content import OriginContent
from swarmreg.registry.access import CATALOG, Authorizer, Principal
from swarmreg.registry.addressing import address, canonical_repository, writable
from swarmreg.registry.read import add_read_routes, request_address
from swarmreg.registry.tokens import Grant, parse_scope
from swarmreg.registry.wire import (
    BASE,
    BLOB_ROUTE,
    CATALOG_PATH,
    CONTENT_DIGEST,
    MANIFEST_ROUTE,
    OCI_SUBJECT,
    TOKEN,
    TOKEN_FORM_FIELDS,
    TOKEN_FORM_LIMIT,
    UPLOAD_UUID,
    UPLOADS_ROUTE,
    blob_path,
    manifest_path,
    upload_path,
)


def _upload_headers(repository: str, uid: str, size: int) -> dict[str, str]:
    """Where the session is and how much of it has arrived (``Range: 0-<last>``, no unit, as distribution)."""
    return {"Location": upload_path(repository, uid), UPLOAD_UUID: uid,
            "Range": f"0-{max(size - 1, 0)}", "Content-Length": "0"}


def _created(location: str, digest: Digest, extra: dict[str, str] | None = None) -> Response:
    return empty_response(201, {"Location": location, CONTENT_DIGEST: str(digest), "Content-Length": "0",
                        **(extra or {})})


def needed_grant() -> Grant | None:
    """What the routed request does: pull, push or delete on its repository (None for ``/v2/``).

    The repository is the one the request addresses (its ``?ns=`` or in-path upstream form
    resolved, as the routes do), so access rules and tokens apply to the name swarmreg keeps: a
    user allowed ``docker.io/library/.*`` reaches nothing else by changing ``ns``."""
    if request.path.rstrip("/") == BASE.rstrip("/"):
        return None
    if request.path == CATALOG_PATH:
        return CATALOG
    name = (request.view_args or {}).get("name")
    if name is None:  # no route matched: the 404 says so, to signed-in users
        return None
    if request.url_rule is not None and "/blobs/uploads" in request.url_rule.rule:
        action = "push"  # an upload session's status and cancel belong to the push
    else:
        action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(request.method, "push")
    return Grant("repository", request_address(name).repository, (action,))


def token_scopes(grant: Grant, default_registry: str = "") -> list[Grant]:
    """What a requested scope asks of the rules, on the repositories as swarmreg keeps them.

    ``repository:docker.io/nginx:pull`` is a grant on ``docker.io/library/nginx``, the name the
    requests then need. A bare name's pull with ``default_registry`` set also asks for its
    fallback (``alpine`` and ``docker.io/library/alpine``), which its reads need when swarmreg
    lacks it: a client asks one scope per image. The rules decide each; a malformed name is
    passed on as asked (such a grant matches no request).
    """
    if grant.type != "repository":
        return [grant]
    try:
        addressed = address(grant.name, None, default_registry)
    except SwarmregError:
        return [grant]
    grants = [attrs.evolve(grant, name=addressed.repository)]
    if addressed.fallback is not None and "pull" in grant.actions:
        grants.append(Grant("repository", addressed.fallback, ("pull",)))
    return grants


def create_proxy_app(auth: Authorizer, index: IndexClient, origin: OriginClient, *,
                     idle_timeout: float, max_manifest: int, default_registry: str = "") -> QuartTrio:
    """The proxy's Quart app: ``auth`` decides who may do what, ``origin`` keeps the bytes,
    ``index`` the tags, manifest records and blob links; request bodies stalled for
    ``idle_timeout`` seconds fail, manifests are at most ``max_manifest`` bytes. Reads of a bare
    name swarmreg does not hold go to ``default_registry`` when it is set; pushes into an
    upstream registry's namespace are refused (swarmreg.registry.addressing)."""
    app = create_base_app("proxy")

    @app.before_request
    async def _authenticate() -> None:
        if request.path.startswith(BASE.rstrip("/")):
            g.principal = await auth.check(request.headers.get("Authorization"), needed_grant(), request.host_url,
                                           client_address())

    @app.route(TOKEN, methods=["GET", "POST"])
    async def token() -> Response:
        """Docker's token endpoint: basic credentials (or none) and scopes in, a bearer token out."""
        if auth.tokens is None:
            raise SwarmregError(NOT_FOUND, "this registry uses basic authentication, not tokens")
        form = await _token_form() if request.method == "POST" else MultiDict()
        authorization = request.headers.get("Authorization")
        if form.get("grant_type") == "password":  # OAuth2 password grant (containerd tries it first)
            credentials = f"{form.get('username', '')}:{form.get('password', '')}".encode()
            authorization = "Basic " + base64.b64encode(credentials).decode()
        scopes = [asked for scope in [*request.args.getlist("scope"), *form.getlist("scope")]
                  for grant in parse_scope(scope) for asked in token_scopes(grant, default_registry)]
        value, expires_in = await auth.token(authorization, scopes, client_address())
        body = {"token": value, "access_token": value, "expires_in": expires_in,
                "issued_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        return json_response(body)

    def catalog_filter() -> Callable[[str], bool] | None:
        principal: Principal = g.principal
        return None if principal.sees_everything else principal.may_pull

    async def _token_form() -> MultiDict[str, str]:
        """The POSTed form, at most TOKEN_FORM_LIMIT bytes (413 before reading a longer one)."""
        declared = request.content_length
        if declared is not None and declared > TOKEN_FORM_LIMIT:
            raise _form_too_large(declared)
        data = await _read_limited(body(), TOKEN_FORM_LIMIT)
        if len(data) > TOKEN_FORM_LIMIT:
            raise _form_too_large(None)
        try:
            fields = parse_qsl(data.decode(), keep_blank_values=True, max_num_fields=TOKEN_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError) as error:
            raise SwarmregError(BAD_REQUEST, "the token request's form is malformed") from error
        return MultiDict(fields)

    async def authorize_pull(repository: str) -> None:
        """A bare name served from the default upstream: the request must be allowed to pull that
        repository too, decided as for any request (401 challenge, 403, or a token's scope)."""
        g.principal = await auth.check(request.headers.get("Authorization"),
                                       Grant("repository", repository, ("pull",)), request.host_url,
                                       client_address())

    add_read_routes(app, index, OriginContent(origin, index), catalog_filter, default_registry=default_registry,
                    authorize=authorize_pull)
    add_health_route(app)

    def body() -> AsyncIterator[bytes]:
        return body_chunks(request.body, idle_timeout)

    def has_body() -> bool:
        return request.content_length not in (None, 0) or "chunked" in request.headers.get("Transfer-Encoding", "")

    async def append(repository: str, uid: str) -> int:
        """Stream this request's body onto the origin's session; returns the session's size.

        With a ``Content-Range``, the chunk must start where the session ends and hold exactly
        the bytes the range names (else 416, as distribution answers), whether its length is
        declared or the body is chunked.
        """
        content_range = request.headers.get("Content-Range")
        if not content_range:
            return await origin.append(uid, repository, body(), request.content_length)
        where = parse_chunk_range(content_range)
        size = await origin.status(uid, repository)
        declared = request.content_length
        if where.start != size or (declared is not None and declared != where.length):
            raise SwarmregError(RANGE_INVALID, "the chunk must continue the upload and match its Content-Range",
                                {"expected_start": size, "content_range": content_range[:100],
                                 "content_length": declared}, headers=_upload_headers(repository, uid, size))
        return await origin.append(uid, repository, _exactly(body(), where.length), where.length)

    async def commit(repository: str, uid: str, digest: Digest) -> Response:
        # Noted at the index first: a garbage collection keeps the digest from its commit to its link.
        async with index.pending(digest) as push:
            size = await origin.finish(uid, repository, digest, through=True)
            await index.link_blob(repository, digest, size, pending=push)
        return _created(blob_path(repository, digest), digest)

    def requested_digest() -> Digest:
        value = request.args.get("digest")
        if not value:
            raise SwarmregError(DIGEST_INVALID, "the digest query parameter is required")
        return Digest.parse(value)

    # Upload sessions live at the origin: the bytes stream through, stored and hashed there once.
    @app.post(f"{UPLOADS_ROUTE}/")
    async def start_upload(name: str) -> Response:
        repository = writable(request_address(name).repository)
        mount, source = request.args.get("mount"), request.args.get("from")
        # Mounting from an upstream's cache into a repository of swarmreg's own is a pull of it.
        source = canonical_repository(source) if mount and source else source
        if mount and source and g.principal.may(Grant("repository", source, ("pull",))):
            digest = Digest.parse(mount)
            # Checked and linked in one transaction at the index: ordered against a garbage
            # collection's mark, which could otherwise remove the source's link in between.
            if await index.mount_blob(source, repository, digest) is not None:
                return _created(blob_path(repository, digest), digest)
            # Not mountable: an ordinary upload session, as the spec says.
        monolithic = requested_digest() if request.args.get("digest") else None
        uid = await origin.open_session(repository, monolithic)
        if monolithic is not None:  # the whole blob in this request
            try:
                await append(repository, uid)
                return await commit(repository, uid, monolithic)
            except BaseException:
                # Nobody knows this session's id: unless it goes now, it holds one of the
                # origin's bounded sessions until its TTL (a bad body, a client that hung up).
                await origin.abandon(uid, repository)
                raise
        return empty_response(202, _upload_headers(repository, uid, 0))

    @app.patch(f"{UPLOADS_ROUTE}/<uid>")
    async def upload_chunk(name: str, uid: str) -> Response:
        repository = writable(request_address(name).repository)
        return empty_response(202, _upload_headers(repository, uid, await append(repository, uid)))

    @app.get(f"{UPLOADS_ROUTE}/<uid>")
    async def upload_status(name: str, uid: str) -> Response:
        repository = request_address(name).repository
        return empty_response(204, _upload_headers(repository, uid, await origin.status(uid, repository)))

    @app.put(f"{UPLOADS_ROUTE}/<uid>")
    async def finish_upload(name: str, uid: str) -> Response:
        repository = writable(request_address(name).repository)
        digest = requested_digest()
        if has_body():  # a last chunk may come with the PUT
            await append(repository, uid)
        return await commit(repository, uid, digest)

    @app.delete(f"{UPLOADS_ROUTE}/<uid>")
    async def cancel_upload(name: str, uid: str) -> Response:
        repository = request_address(name).repository
        await origin.cancel(uid, repository)
        return empty_response(204, {UPLOAD_UUID: uid})

    @app.delete(BLOB_ROUTE)
    async def delete_blob(name: str, digest: str) -> Response:
        repository, parsed = request_address(name).repository, Digest.parse(digest)
        if await index.blob_size(repository, parsed) is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(parsed)})
        await index.unlink_blob(repository, parsed)
        return empty_response(202, {"Content-Length": "0"})

    @app.put(MANIFEST_ROUTE)
    async def put_manifest(name: str, reference: str) -> Response:
        repository = writable(request_address(name).repository)
        target = parse_reference(reference)
        data = await _read_limited(body(), max_manifest)
        if len(data) > max_manifest:  # (parse_manifest has its own, fixed limit too)
            raise manifest_too_large(len(data), max_manifest)
        # By digest, the manifest is verified with that digest's algorithm (and stored under it);
        # by tag its digest is the canonical sha256.
        manifest = parse_manifest(data, request.headers.get("Content-Type"),
                                  algorithm=target.algorithm if isinstance(target, Digest) else CANONICAL)
        if isinstance(target, Digest) and target != manifest.digest:
            raise SwarmregError(DIGEST_INVALID, "the manifest does not match the digest it was put under",
                                {"digest": str(target), "actual": str(manifest.digest)})
        async with index.pending(manifest.digest) as push:
            await origin.upload_bytes(repository, manifest.digest, data, through=True)
            # The index checks in the same transaction that every blob is linked (MANIFEST_BLOB_UNKNOWN),
            # ordered against garbage collection; bytes stored for a refused manifest are collected.
            await index.put_manifest(repository, manifest.digest, media_type=manifest.media_type,
                                     size=manifest.size, artifact_type=manifest.artifact_type,
                                     subject=manifest.subject, annotations=manifest.annotations,
                                     blobs=manifest.blobs, children=manifest.children, pending=push)
        if not isinstance(target, Digest):
            await index.put_tag(repository, target, manifest.digest)
        extra = {OCI_SUBJECT: str(manifest.subject)} if manifest.subject else {}
        return _created(manifest_path(repository, manifest.digest), manifest.digest, extra)

    @app.delete(MANIFEST_ROUTE)
    async def delete_manifest(name: str, reference: str) -> Response:
        repository = request_address(name).repository
        target = parse_reference(reference)
        if isinstance(target, Digest):
            await index.delete_manifest(repository, target)
        else:
            await index.delete_tag(repository, target)
        return empty_response(202, {"Content-Length": "0"})

    return app


def client_address() -> str:
    """The peer's address, whose failed sign-ins are counted (no proxy in front is trusted)."""
    return request.remote_addr or ""


def _form_too_large(declared: int | None) -> SwarmregError:
    return SwarmregError(TOO_LARGE, f"the token request's form is over {TOKEN_FORM_LIMIT} bytes",
                         {"limit": TOKEN_FORM_LIMIT, "content_length": declared})


async def _exactly(chunks: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """``chunks`` as they come, if they add up to ``length`` bytes; RANGE_INVALID as soon as they cannot."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > length:
            raise SwarmregError(RANGE_INVALID, "the chunk is longer than its Content-Range", {"length": length})
        yield chunk
    if received != length:
        raise SwarmregError(RANGE_INVALID, "the chunk is shorter than its Content-Range",
                            {"length": length, "received": received})


async def _read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or as soon as it passes ``limit`` bytes, the first limit + 1 of them."""
    parts, size = [], 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)[:limit + 1]
