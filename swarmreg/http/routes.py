"""Routes every role's HTTP port shares: the health check, the counters and the Prometheus metrics."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.http.app import METRICS_KEY
from swarmreg.http.paths import HEALTH, INSTANCE_HEADER, METRICS, STATS
from swarmreg.http.responses import json_response

if TYPE_CHECKING:
    from swarmreg.metrics import Metrics


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


def add_metrics_route(app: QuartTrio, metrics: Metrics) -> None:
    """``GET /metrics``: the daemon's registry in Prometheus' text format; the request middleware
    (swarmreg.http.app) records this port's requests into ``metrics`` from now on."""
    app.config[METRICS_KEY] = metrics

    @app.get(METRICS)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)
