"""Who is asking, for the proxy's APIs beside the registry's (preheat jobs, the admin API)."""

from __future__ import annotations

from typing import Any

from quart import request

from swarmreg.errors import DENIED, SwarmregError
from swarmreg.registry.access import Authorizer, Principal
from swarmreg.registry.tokens import Grant


async def api_principal(auth: Authorizer, wanted: Grant | None) -> Principal:
    """The request's principal; in token mode basic credentials are taken too (a script's
    request need not fetch a token first). The challenge of a 401 names ``wanted``."""
    header = request.headers.get("Authorization")
    client = request.remote_addr or ""
    if auth.tokens is not None and header and header.partition(" ")[0].lower() == "basic":
        return Principal(await auth.basic.user(header, client), auth.access)
    return await auth.check(header, wanted, request.host_url, client)


def refusal(auth: Authorizer, principal: Principal, message: str, detail: dict[str, Any]) -> SwarmregError:
    """What to answer ``principal`` when it may not: 401 with the challenge to an anonymous
    client of a proxy with users (sign in, then ask again), else 403 DENIED."""
    if principal.user is None and auth.enabled and principal.claims is None:
        return auth.basic.refusal("authentication required")
    return SwarmregError(DENIED, message, detail)
