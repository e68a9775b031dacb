"""The agent's blob API on its server port (Kraken's agent download endpoint), and the
prefetches the proxy's preheat asks for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.agent.admin import add_admin_routes
from swarmreg.agent.cache import BlobCache
from swarmreg.agent.wire import BLOB_ROUTE, PREFETCH
from swarmreg.authz import PREFETCHERS, ClusterGuard
from swarmreg.digest import Digest
from swarmreg.errors import JOB_UNKNOWN, SwarmregError
from swarmreg.http.app import create_base_app
from swarmreg.http.identity import peer_certificate
from swarmreg.http.responses import json_response
from swarmreg.http.routes import add_health_route, add_status_route
from swarmreg.names import validate_namespace
from swarmreg.registry.read import Content, content_response

if TYPE_CHECKING:
    from swarmreg.node import Node


class PrefetchState(Protocol):
    def document(self) -> dict[str, Any]: ...


class Prefetcher(Protocol):
    """What the prefetch routes ask of the agent (swarmreg.agent.prefetch.Prefetches)."""

    def start(self, namespace: str, digest: Digest) -> PrefetchState: ...

    def status(self, digest: Digest) -> PrefetchState | None: ...


def create_agent_app(content: Content, stats: Callable[[bool], dict[str, Any]],
                     prefetcher: Prefetcher | None = None, guard: ClusterGuard | None = None, *,
                     cache: BlobCache | None = None, admin_remote: bool = False, node: Node) -> QuartTrio:
    """The agent's Quart app: GET/HEAD of blobs by namespace and digest, health, counters, and
    with ``prefetcher`` the prefetch routes (asking is for the proxy role or the cluster secret,
    as ``guard`` checks; this port is plain HTTP even with [tls]); with ``cache`` the local admin
    (swarmreg.agent.admin; from loopback only unless ``admin_remote``); the status page of ``node``."""
    app = create_base_app("agent")
    add_health_route(app)
    add_status_route(app, node, stats)
    if cache is not None:
        add_admin_routes(app, cache, remote=admin_remote)
    guard = guard or ClusterGuard()

    @app.route(BLOB_ROUTE, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        return await content_response(content, validate_namespace(namespace), Digest.parse(digest))

    if prefetcher is None:
        return app

    @app.post(f"{BLOB_ROUTE}{PREFETCH}")
    async def prefetch(namespace: str, digest: str) -> Response:
        guard.check_plain(PREFETCHERS, "asking an agent to prefetch", peercert=peer_certificate(),
                          authorization=request.headers.get("Authorization"))
        started = prefetcher.start(validate_namespace(namespace), Digest.parse(digest))
        return json_response(started.document(), status=202)

    @app.get(f"{BLOB_ROUTE}{PREFETCH}")
    async def prefetch_status(namespace: str, digest: str) -> Response:
        validate_namespace(namespace)
        parsed = Digest.parse(digest)
        found = prefetcher.status(parsed)
        if found is None:
            raise SwarmregError(JOB_UNKNOWN, "this agent was not asked to prefetch the blob and does not hold it",
                                {"digest": str(parsed)})
        return json_response(found.document())

    return app
