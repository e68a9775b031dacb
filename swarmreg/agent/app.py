"""The agent's blob API on its server port (Kraken's agent download endpoint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from swarmreg.agent.wire import BLOB_ROUTE
from swarmreg.digest import Digest
from swarmreg.http.app import create_base_app
from swarmreg.http.routes import add_health_route, add_stats_route
from swarmreg.names import validate_namespace
from swarmreg.registry.read import Content, content_response


def create_agent_app(content: Content, stats: Callable[[bool], dict[str, Any]]) -> QuartTrio:
    """The agent's Quart app: GET/HEAD of blobs by namespace and digest, health, counters."""
    app = create_base_app("agent")
    add_health_route(app)
    add_stats_route(app, stats)

    @app.route(BLOB_ROUTE, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        return await content_response(content, validate_namespace(namespace), Digest.parse(digest))

    return app
