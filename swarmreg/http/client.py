"""What every client of our own HTTP APIs shares: reading the JSON error envelope back."""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import trio

from swarmreg.errors import BAD_GATEWAY, DENIED, UNAUTHORIZED, SwarmregError, error_code

log = logging.getLogger(__name__)

# Headers of an error answer that a relaying port passes on with the error (how long to wait
# before retrying a 429 or 503).
RELAYED_HEADERS = ("Retry-After",)

log = logging.getLogger(__name__)


def envelope_error(response: httpx.Response, service: str = "upstream") -> SwarmregError | None:
    """The error a response's JSON envelope carries, None without one (or with an unknown code);
    it keeps the RELAYED_HEADERS of the response, so relaying it answers them too. ``service``
    is who answered, its role first ("origin http://..."); only the role goes into an answer.

    An internal port answers UNAUTHORIZED or DENIED only to this node's cluster credentials (the
    ``[cluster] secret`` it sends, the roles of its certificate): a misconfigured node, not the
    edge client's doing. Relayed as they are, a docker client got 401 or 403 for its push and
    blamed its own login (and read the name of our certificate); it is BAD_GATEWAY, naming the fix.
    """
    try:
        entry = response.json()["errors"][0]
        headers = {name: response.headers[name] for name in RELAYED_HEADERS if name in response.headers}
        error = SwarmregError(error_code(entry["code"]), entry.get("message"), entry.get("detail"), headers)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    if error.code in (UNAUTHORIZED, DENIED):
        log.warning("%s refused this node's cluster credentials: %s", service, error.message)
        return SwarmregError(
            BAD_GATEWAY, f"the {service.split(' ')[0]} refused this node's cluster credentials "
            "(" + error.code.code + "): give every node the same [cluster] secret, or this node a certificate "
            "with the role the write needs (swarmreg certs issue NAME --roles ...)", {"upstream": error.code.code})
    return error


def raise_for_error(response: httpx.Response, service: str) -> None:
    """Raise the SwarmregError an error response describes; one without an envelope is BAD_GATEWAY.

    ``service`` names the role that answered ("origin"), never its address: the error may reach
    a registry client. The URL asked goes to the log instead."""
    if response.is_success:
        return
    error = envelope_error(response, service)
    if error is None:
        log.warning("%s at %s answered %d without an error envelope", service, _url(response), response.status_code)
        error = SwarmregError(BAD_GATEWAY, f"{service} answered {response.status_code}",
                              {"status": response.status_code})
    raise error


def _url(response: httpx.Response) -> str:
    try:
        return str(response.request.url.copy_with(query=None))
    except RuntimeError:  # a response built without a request (tests)
        return "(unknown)"


def transport_reason(error: Exception) -> str:
    """A short reason for a failed request, for the log: the error's type and message (never a
    traceback); without a message, the first one among its causes (trio's TLS failures are an
    empty BrokenResourceError from an ssl.SSLError). The message may name the address, so it is
    not for answers."""
    cause: BaseException | None = error
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    return f"{type(error).__name__}: {cause}" if cause is not None else type(error).__name__


# Name lookups that may run at once in worker threads of their own (trio.socket's resolver).
NAME_LOOKUPS = 8


class LimitedResolver(trio.abc.HostnameResolver):
    """Host name lookups in at most ``limit`` worker threads, apart from trio's default limiter.

    Any registry client may name an upstream in ``?ns=`` or the path; the herd looks each name up
    (trio, in a worker thread). With a DNS server that is slow or unreachable each lookup holds a
    thread for seconds, and by default they took the threads every file read and write of the
    daemon waits for: 300 such requests delayed a cached blob read from the proxy by 26 s. Numeric
    addresses never get here (trio answers them at once)."""

    def __init__(self, limit: int = NAME_LOOKUPS) -> None:
        self.limiter = trio.CapacityLimiter(limit)

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, family: int = 0,
                          type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        return await trio.to_thread.run_sync(socket.getaddrinfo, host, port, family, type, proto, flags,
                                             abandon_on_cancel=True, limiter=self.limiter)

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        return await trio.to_thread.run_sync(socket.getnameinfo, sockaddr, flags,
                                             abandon_on_cancel=True, limiter=self.limiter)
