"""The agent's blob API on its server port (Kraken's agent download endpoint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import request
from quart_trio import QuartTrio

from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError
from swarmreg.http.app import PlainResponse as Response
from swarmreg.http.app import create_base_app
from swarmreg.http.responses import blob_response
from swarmreg.http.routes import add_health_route, add_stats_route
from swarmreg.names import validate_namespace
from swarmreg.agent.wire import BLOB_ROUTE
from swarmreg.registry.read import Content
from swarmreg.store.files import Body


def create_agent_app(content: Content, stats: Callable[[bool], dict[str, Any]]) -> QuartTrio:
    """The agent's Quart app: GET/HEAD of blobs by namespace and digest, health, counters."""
    app = create_base_app("agent")
    add_health_route(app)
    add_stats_route(app, stats)

    @app.route(BLOB_ROUTE, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        size = await content.blob_size(namespace, parsed)
        if size is None:
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(parsed)})

        async def open_range(start: int, end: int) -> Body:
            return await content.open_blob(namespace, parsed, size, start, end)

        return await blob_response(parsed, size, request.headers.get("Range"),
                                   None if request.method == "HEAD" else open_range)

    return app
