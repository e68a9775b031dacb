"""A client of an agent's blob API, for the proxy's preheat: ask the agent to prefetch blobs, and
read how that went."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from swarmreg.agent.wire import PREFETCH, blob_path
from swarmreg.authz import bearer_headers
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, SwarmregError
from swarmreg.http.client import raise_for_error, transport_reason

log = logging.getLogger(__name__)


class AgentClient:
    """One agent's blob API (plain HTTP, as agents serve it); use as an async context manager.
    ``secret`` is the cluster secret, sent as a bearer token: prefetching is for the proxy."""

    def __init__(self, address: Address, *, secret: str = "", timeout: float = 30.0) -> None:
        self.address = address
        self.base = f"http://{address}"
        self._http = httpx.AsyncClient(base_url=self.base, headers=bearer_headers(secret),
                                       timeout=httpx.Timeout(timeout, connect=5))

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path)
        except httpx.HTTPError as error:
            log.warning("agent %s: %s %s failed: %s", self.base, method, path, transport_reason(error))
            raise SwarmregError(BAD_GATEWAY, f"agent unreachable: {type(error).__name__}") from None
        raise_for_error(response, "agent")
        try:
            body: dict[str, Any] = response.json()
            body["state"]  # noqa: B018 (the field every answer has)
        except (ValueError, KeyError, TypeError):
            raise SwarmregError(BAD_GATEWAY, "agent answered a prefetch without its state") from None
        return body

    async def prefetch(self, namespace: str, digest: Digest) -> dict[str, Any]:
        """Ask the agent to fetch the blob; ``{"state": "running" | "done" | "failed", ...}`` at once."""
        return await self._send("POST", blob_path(namespace, digest, PREFETCH))

    async def prefetch_status(self, namespace: str, digest: Digest) -> dict[str, Any]:
        """How the blob's prefetch is going (JOB_UNKNOWN if the agent was not asked)."""
        return await self._send("GET", blob_path(namespace, digest, PREFETCH))
