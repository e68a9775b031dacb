"""The admin REST API on the proxy port (ociregistry's ``/cmd/...``): prune, lists, garbage collection.

Only for users whom a ``[[proxy.access]]`` rule gives the ``admin`` action; refused for everyone
when no rule does, also on a proxy without users (every request then is anonymous, and only a
rule for ``anonymous`` could grant it). Credentials are those of the registry API: basic, or
with ``proxy.auth = "token"`` a bearer token for the scope ``registry:admin:*`` (the 401 says so)
or basic credentials. Refusals are the registry's 401 / 403 envelopes, checked before any
parameter is read; a bad parameter is 400 BAD_REQUEST naming it, and changes nothing.

Answers are ociregistry's columnar text (swarmreg.proxy.admin_text), or JSON with
``Accept: application/json``. The work is the index's (prune, lists) and the origin's
(garbage collection).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.durations import parse_duration
from swarmreg.http.responses import json_response
from swarmreg.index.client import IndexClient
from swarmreg.index.selection import bad_parameter, parse_count, parse_patterns
from swarmreg.origin.client import OriginClient
from swarmreg.proxy.admin_text import blob_table, image_table, manifest_table, prune_table, report_table, status_table
from swarmreg.proxy.api_auth import api_principal, refusal
from swarmreg.proxy.status import ClusterStatus
from swarmreg.proxy.wire import (
    CMD_BLOBS,
    CMD_GC,
    CMD_IMAGES,
    CMD_MANIFESTS,
    CMD_PARAMETERS,
    CMD_PRUNE,
    CMD_STATUS,
    JSON,
    LIST_COUNT,
    PRUNE_COUNT,
    TEXT,
    parse_flag,
)
from swarmreg.registry.access import ADMIN, Authorizer, Principal


async def authorize_admin(auth: Authorizer) -> Principal:
    """The request's principal if it may use the admin API; else 401 (no or bad credentials:
    with the challenge the client needs) or 403 DENIED."""
    if not auth.enabled:  # no users: every request is anonymous
        principal = Principal(None, auth.access)
    else:
        principal = await api_principal(auth, ADMIN)
    if not principal.may(ADMIN):
        raise refusal(auth, principal, "the admin API needs the admin action in a [[proxy.access]] rule",
                      {"scope": ADMIN.scope()})
    return principal


def _parameters(path: str) -> Mapping[str, str]:
    """The query's parameters, each once; BAD_REQUEST for one the endpoint does not take."""
    allowed = CMD_PARAMETERS[path]
    for name in request.args:
        if name not in allowed:
            raise bad_parameter(name[:64], f"not a parameter of {path} (it takes {', '.join(sorted(allowed))})")
        if len(request.args.getlist(name)) > 1:
            raise bad_parameter(name, "given more than once")
    return request.args


def _flag(args: Mapping[str, str], name: str) -> bool:
    try:
        return parse_flag(args.get(name), name)
    except ValueError:
        raise bad_parameter(name, "expected true or false") from None


def _answer(document: Any, text: Callable[[Any], str]) -> Response:
    """JSON if the client asks for it (Accept), else the columnar text."""
    if request.accept_mimetypes.best_match([TEXT, JSON], default=TEXT) == JSON:
        return json_response(document)
    return Response(text(document), content_type="text/plain; charset=utf-8")


def add_admin_routes(app: QuartTrio, auth: Authorizer, index: IndexClient, origin: OriginClient,
                     status: ClusterStatus) -> None:
    """Register ``/cmd/prune``, the three lists, ``/cmd/gc`` and ``/cmd/status`` on the proxy's ``app``."""

    def admin(path: str, methods: list[str]) -> Callable[[Callable[[Mapping[str, str]], Awaitable[Response]]],
                                                         Callable[[], Awaitable[Response]]]:
        """A route for admins: authorized first, then its parameters checked, then ``handler``."""
        def register(handler: Callable[[Mapping[str, str]], Awaitable[Response]]) -> Callable[[], Awaitable[Response]]:
            async def route() -> Response:
                await authorize_admin(auth)
                return await handler(_parameters(path))

            route.__name__ = f"admin_{handler.__name__}"
            app.route(path, methods=methods)(route)
            return route

        return register

    @admin(CMD_PRUNE, ["DELETE"])
    async def prune(args: Mapping[str, str]) -> Response:
        kind = args.get("type", "")
        duration = 0.0
        if kind in ("accessed", "created"):
            if "dur" not in args:
                raise bad_parameter("dur", f"pruning by {kind} needs a duration (30d, 12h, 90m)")
            try:
                duration = parse_duration(args["dur"])
            except ValueError as error:
                raise bad_parameter("dur", str(error)[:200]) from None
        expr = args.get("expr") if kind == "pattern" else None
        if expr is not None:
            parse_patterns(expr, "expr")  # refused here, before the index is asked
        elif kind == "pattern":
            raise bad_parameter("expr", "pruning by pattern needs expr: comma-separated regular expressions")
        elif kind not in ("accessed", "created"):
            raise bad_parameter("type", "expected accessed, created or pattern")
        count = parse_count(args.get("count"), PRUNE_COUNT)
        report = await index.prune(kind, duration=duration, expr=expr, count=count, dry_run=_flag(args, "dryRun"))
        return _answer(report, prune_table)

    @admin(CMD_IMAGES, ["GET"])
    async def images(args: Mapping[str, str]) -> Response:
        pattern = args.get("pattern")
        parse_patterns(pattern)
        found = await index.list_images(pattern=pattern, digest=args.get("digest") or None,
                                        count=parse_count(args.get("count"), LIST_COUNT))
        return _answer({"images": found}, lambda doc: image_table(doc["images"]))

    @admin(CMD_MANIFESTS, ["GET"])
    async def manifests(args: Mapping[str, str]) -> Response:
        pattern = args.get("pattern")
        parse_patterns(pattern)
        found = await index.list_manifests(pattern=pattern, count=parse_count(args.get("count"), LIST_COUNT))
        return _answer({"manifests": found}, lambda doc: manifest_table(doc["manifests"]))

    @admin(CMD_BLOBS, ["GET"])
    async def blobs(args: Mapping[str, str]) -> Response:
        found = await index.list_blobs(substr=args.get("substr") or None,
                                       count=parse_count(args.get("count"), LIST_COUNT))
        return _answer({"blobs": found}, lambda doc: blob_table(doc["blobs"]))

    @admin(CMD_GC, ["POST"])
    async def gc(args: Mapping[str, str]) -> Response:
        report = await origin.collect_garbage(dry_run=_flag(args, "dryRun"))
        return _answer(report, report_table)

    @admin(CMD_STATUS, ["GET"])
    async def cluster_status(args: Mapping[str, str]) -> Response:
        return _answer(await status.document(), status_table)
