"""An httpx transport that sends each request to a member of a ring, and to the next on failure.

A client's base URL names no member; each request goes to the members in the order the ring gives
for its key (``extensions={KEY: ...}``), or only to the one member it is pinned to
(``extensions={MEMBER: address}``: an upload session lives at one origin). A member that cannot
be reached is marked down in the ring (a passive health check) and the next one is tried, for as
long as the request's budget lasts. Which member answered is in ``response.extensions[MEMBER]``.
"""

from __future__ import annotations

import logging
import ssl

import httpx
import trio

from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.errors import UNAVAILABLE, SwarmregError
from swarmreg.http.client import transport_reason

log = logging.getLogger(__name__)

KEY = "swarmreg.ring_key"
MEMBER = "swarmreg.ring_member"
# Answers of a GET or HEAD that the next member is asked after (a member without the blob
# yet, or in trouble), when the request's extensions list them under NEXT_ON.
NEXT_ON = "swarmreg.ring_next_on"
# A base URL for clients of a ring: the transport puts each member's address in.
PLACEHOLDER = "ring.invalid"

# Errors after which a request's body was never sent: any request may go to the next member.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
# Errors that say the member is gone, not merely slow (timeouts do not mark it down).
_GONE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_IDEMPOTENT = frozenset({"GET", "HEAD"})


def url_of(member: Address, tls: bool) -> str:
    """The base URL of one member."""
    return f"{'https' if tls else 'http'}://{member}"


class RingTransport(httpx.AsyncBaseTransport):
    """Sends each request to the ring's members in turn (see the module); ``budget`` seconds
    bound the attempts at the next members (the first one is always made)."""

    def __init__(self, ring: Ring, *, verify: ssl.SSLContext | bool = True, budget: float = 60.0) -> None:
        self.ring = ring
        self.budget = budget
        self._inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pinned: Address | None = request.extensions.get(MEMBER)
        members = [pinned] if pinned is not None else self.ring.order(request.extensions.get(KEY, ""))
        if not members:  # a DNS ring whose name has not resolved yet
            raise SwarmregError(UNAVAILABLE, f"no {self.ring.role} is known yet")
        next_on: frozenset[int] = request.extensions.get(NEXT_ON, frozenset())
        deadline = trio.current_time() + self.budget
        for attempt, member in enumerate(members):
            last = attempt == len(members) - 1 or trio.current_time() >= deadline
            self._point(request, member)
            try:
                response = await self._inner.handle_async_request(request)
            except httpx.TransportError as error:
                if isinstance(error, _GONE):
                    self.ring.mark_down(member, transport_reason(error))
                retry = isinstance(error, _NOT_SENT) or (request.method in _IDEMPOTENT and isinstance(error, _GONE))
                if last or not retry:
                    raise
                log.info("%s %s: %s %s failed, trying the next member", self.ring.role, member, request.method,
                         request.url.path)
                continue
            response.extensions = {**response.extensions, MEMBER: member}
            if not last and request.method in _IDEMPOTENT and response.status_code in next_on:
                await response.aclose()
                continue
            return response
        raise AssertionError("the last member's answer or error is returned above")

    @staticmethod
    def _point(request: httpx.Request, member: Address) -> None:
        """Aim ``request`` at ``member``: its URL and its Host header."""
        request.url = request.url.copy_with(host=member.host, port=member.port)
        request.headers["Host"] = str(member)

    async def aclose(self) -> None:
        await self._inner.aclose()
