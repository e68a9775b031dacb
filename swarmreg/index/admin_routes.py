"""The index's internal admin endpoints, for the proxy's admin API (swarmreg.proxy.admin):
prune (a write, for the proxy and index roles like every index write), the lists, and the
replication queue (``swarmreg replication status``).

Paths and parameters are in swarmreg.index.wire; answers are JSON, errors the registry envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.http.responses import json_response
from swarmreg.index.listing import list_blobs, list_images, list_manifests
from swarmreg.index.prune import PruneRequest, prune
from swarmreg.index.replication_queue import queue_status
from swarmreg.index.selection import parse_count, parse_patterns
from swarmreg.index.store import IndexStore
from swarmreg.index.validate import query_text
from swarmreg.index.wire import (
    ADMIN_BLOBS,
    ADMIN_IMAGES,
    ADMIN_MANIFESTS,
    ADMIN_PRUNE,
    ADMIN_REPLICATION,
    REPLICATION_COUNT,
)

# What a JSON body is read with: the index app's own reader (its size limit and idle timeout).
ReadBody = Callable[[], Awaitable[object]]


def add_admin_routes(app: QuartTrio, store: IndexStore, read_body: ReadBody, *,
                     before_prune: Callable[[], Awaitable[object]] | None = None,
                     remotes: Sequence[str] = ()) -> None:
    """Register the prune, list and replication endpoints on the index's ``app``; ``before_prune``
    runs before each prune (the access times' flush); ``remotes`` are those [[index.replicate]] names."""
    @app.post(ADMIN_PRUNE)
    async def prune_manifests() -> Response:
        report = await prune(store, PruneRequest.from_json(await read_body()), before=before_prune)
        return json_response(report.to_json())

    @app.get(ADMIN_IMAGES)
    async def images() -> Response:
        return json_response({"images": await list_images(
            store, parse_patterns(request.args.get("pattern")), request.args.get("digest", ""),
            parse_count(request.args.get("count"), None))})

    @app.get(ADMIN_MANIFESTS)
    async def manifests() -> Response:
        return json_response({"manifests": await list_manifests(
            store, parse_patterns(request.args.get("pattern")), parse_count(request.args.get("count"), None))})

    @app.get(ADMIN_BLOBS)
    async def blobs() -> Response:
        substr = query_text(request.args.get("substr"), "substr") or ""
        return json_response({"blobs": await list_blobs(store, substr, parse_count(request.args.get("count"), None))})

    @app.get(ADMIN_REPLICATION)
    async def replication() -> Response:
        return json_response(await queue_status(store, remotes, parse_count(request.args.get("count"),
                                                                            REPLICATION_COUNT)))
