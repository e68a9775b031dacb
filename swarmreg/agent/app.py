"""The agent's blob API on its server port (Kraken's agent download endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import request
from quart_trio import QuartTrio

from swarmreg.agent.registry import SwarmContent
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.http.app import PlainResponse as Response
from swarmreg.http.app import create_base_app
from swarmreg.http.responses import opened_blob_response
from swarmreg.names import validate_namespace
from swarmreg.swarm.stats import add_stats_route

if TYPE_CHECKING:
    from swarmreg.agent.service import AgentService

BLOB = "/namespace/<path:namespace>/blobs/<digest>"


def create_agent_app(agent: AgentService) -> QuartTrio:
    """The agent's Quart app: GET/HEAD of blobs by namespace and digest, health, counters."""
    app = create_base_app("agent")
    content = SwarmContent(agent)

    @app.get("/health")
    async def health() -> Response:
        return Response("OK\n")

    add_stats_route(app, agent.engine, lambda: {"inline": agent.require_downloads().inline_stats()})

    @app.route(BLOB, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        size = await content.blob_size(namespace, parsed)
        if size is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(parsed)})

        async def open_range(start: int, end: int) -> Any:
            return await content.open_blob(namespace, parsed, size, start, end)

        return await opened_blob_response(parsed, size, request.headers.get("Range"),
                                          None if request.method == "HEAD" else open_range)

    return app
