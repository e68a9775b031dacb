"""``POST /preheat`` and ``GET /preheat/<id>`` on the proxy port (see swarmreg.proxy.preheat).

Who may: the proxy's authentication applies. A job needs ``pull`` on every repository its
references name, and so does reading its progress; a bare name falls back to its
``default_registry`` repository (when swarmreg has none of the name) only if the requester may
pull that one too. Credentials are those of the registry API: basic, or with ``proxy.auth = "token"``
a bearer token from ``/token`` (whose scopes must grant those pulls) or basic credentials, which
``swarmreg load`` sends. Without ``[proxy.users]`` anyone may, as anyone may push.
"""

from __future__ import annotations

import json

import attrs
from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.errors import BAD_REQUEST, JOB_UNKNOWN, TOO_LARGE, SwarmregError
from swarmreg.http.app import body_chunks
from swarmreg.http.responses import json_response
from swarmreg.proxy.api_auth import api_principal, refusal
from swarmreg.proxy.preheat import Preheater
from swarmreg.proxy.wire import JOB_ID, MAX_BODY, PREHEAT, PREHEAT_ROUTE, job_path, parse_job_request
from swarmreg.registry.access import Authorizer, Principal
from swarmreg.registry.tokens import Grant

# Denied scopes named in a refusal, at most.
_NAMED = 5


def add_preheat_routes(app: QuartTrio, preheater: Preheater, auth: Authorizer, *, idle_timeout: float,
                       default_registry: str = "") -> None:
    """Register the preheat endpoints on the proxy's ``app``."""

    @app.post(PREHEAT)
    async def start_preheat() -> Response:
        body = await _json_body(idle_timeout)
        job_request = parse_job_request(body, default_registry)
        repositories = dict.fromkeys(r for target in job_request.targets for r in target.repositories)
        principal = await authorize(auth, tuple(repositories))
        # A bare name's default_registry repository is used only if the requester may pull it.
        fallbacks = {target.fallback for target in job_request.targets if target.fallback is not None}
        denied = frozenset(f for f in fallbacks if not principal.may(Grant("repository", f, ("pull",))))
        job = preheater.submit(attrs.evolve(job_request, denied=denied))
        return json_response({"id": job.id, "status": job.status}, status=202, headers={"Location": job_path(job.id)})

    @app.get(PREHEAT_ROUTE)
    async def preheat_progress(job_id: str) -> Response:
        job = preheater.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            await authorize(auth, ())  # signed in first: an anonymous caller learns nothing
            raise SwarmregError(JOB_UNKNOWN, "no such preheat job (finished jobs are forgotten after an hour)",
                                {"id": job_id[:64]})
        await authorize(auth, job.repositories)
        return json_response(job.document())


async def authorize(auth: Authorizer, repositories: tuple[str, ...]) -> Principal:
    """The request's principal, if it may pull every one of ``repositories`` (none: signed in, or
    an open proxy); else 401 with the challenge (no or bad credentials) or 403 DENIED."""
    grants = [Grant("repository", repository, ("pull",)) for repository in repositories]
    principal = await api_principal(auth, grants[0] if grants else None)
    denied = [grant for grant in grants if not principal.may(grant)]
    if denied:
        raise refusal(auth, principal, f"pull is denied on {len(denied)} of the repositories named",
                      {"scopes": [grant.scope() for grant in denied[:_NAMED]]})
    return principal


async def _json_body(idle_timeout: float) -> object:
    """The request's JSON body, at most MAX_BODY bytes (413 beyond, before reading on)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY:
        raise _too_large(declared)
    parts, size = [], 0
    async for chunk in body_chunks(request.body, idle_timeout):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large(declared)
    try:
        return json.loads(b"".join(parts).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SwarmregError(BAD_REQUEST, "the preheat request must be a JSON object") from None


def _too_large(declared: int | None) -> SwarmregError:
    return SwarmregError(TOO_LARGE, f"a preheat request is at most {MAX_BODY} bytes",
                         {"limit": MAX_BODY, "content_length": declared})
