"""Routes every role's HTTP port shares: the health check, the counters, the status page and the
Prometheus metrics."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.http.app import METRICS_KEY
from swarmreg.http.paths import HEALTH, INSTANCE_HEADER, METRICS, STATS, STATUS
from swarmreg.http.responses import json_response
from swarmreg.http.status_page import load_page, note_error, page_response, status_figures

if TYPE_CHECKING:
    from swarmreg.metrics import Metrics
    from swarmreg.node import Node


def add_health_route(app: QuartTrio) -> None:
    """``GET /health``: ``OK`` while the port serves, with this run's INSTANCE_HEADER."""
    instance = secrets.token_hex(8)

    @app.get(HEALTH)
    async def health() -> Response:
        return Response("OK\n", content_type="text/plain", headers={INSTANCE_HEADER: instance})


def _flag(name: str) -> bool:
    return request.args.get(name, "") in ("1", "true")


def add_status_route(app: QuartTrio, node: Node, figures: Callable[[bool], dict[str, Any]] | None = None) -> None:
    """``GET /stats``: the port's counters ``figures(peers)`` (``?peers=1`` asks for each peer's
    state; none without ``figures``), with ``?status=1`` the node's status figures under ``status``
    (each torrent's peers and a scan of held blobs: not for pollers that only count); ``GET /status``:
    the page that shows them (swarmreg.http.status_page). Errors answered here join the node's
    recent errors."""
    template = load_page()

    @app.get(STATS)
    async def stats() -> Response:
        counters = figures(_flag("peers")) if figures is not None else {}
        return json_response({**counters, "status": await status_figures(node)} if _flag("status") else counters)

    @app.get(STATUS)
    async def status() -> Response:
        return page_response(template)

    @app.after_request
    async def _note_error(response: Response) -> Response:
        await note_error(node, request.method, request.path, response)
        return response


def add_metrics_route(app: QuartTrio, metrics: Metrics) -> None:
    """``GET /metrics``: the daemon's registry in Prometheus' text format; the request middleware
    (swarmreg.http.app) records this port's requests into ``metrics`` from now on."""
    app.config[METRICS_KEY] = metrics

    @app.get(METRICS)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)
