"""Routes every role's HTTP port shares: the health check and the counters."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.http.paths import HEALTH, INSTANCE_HEADER, STATS
from swarmreg.http.responses import json_response


def add_health_route(app: QuartTrio) -> None:
    """``GET /health``: ``OK`` while the port serves, with this run's INSTANCE_HEADER."""
    instance = secrets.token_hex(8)

    @app.get(HEALTH)
    async def health() -> Response:
        return Response("OK\n", content_type="text/plain", headers={INSTANCE_HEADER: instance})


def add_stats_route(app: QuartTrio, figures: Callable[[bool], dict[str, Any]]) -> None:
    """``GET /stats``: the counters ``figures(peers)`` reports; ``?peers=1`` asks for each peer's state."""

    @app.get(STATS)
    async def stats() -> Response:
        return json_response(figures(request.args.get("peers", "") in ("1", "true")))
