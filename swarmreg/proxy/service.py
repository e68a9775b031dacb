"""The proxy service: serves the registry API, keeps upload sessions, talks to origin and index."""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import TYPE_CHECKING, cast

import trio

from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.http.routes import add_status_route
from swarmreg.http.serve import serve_http
from swarmreg.index.client import IndexClient
from swarmreg.node import Node
from swarmreg.origin.client import OriginClient
from swarmreg.origin.local import LocalOrigin
from swarmreg.proxy.admin import add_admin_routes
from swarmreg.proxy.app import create_proxy_app
from swarmreg.proxy.preheat import Preheater, TrackerAgents
from swarmreg.proxy.preheat_routes import add_preheat_routes
from swarmreg.proxy.status import ClusterStatus
from swarmreg.registry.access import Access, Authorizer
from swarmreg.registry.auth import BasicAuth, FailureThrottle
from swarmreg.registry.tokens import TokenIssuer
from swarmreg.tls.context import ServerTls

if TYPE_CHECKING:
    from swarmreg.origin.service import OriginService

log = logging.getLogger(__name__)


# The service name in token challenges and tokens (Docker's "service" parameter).
TOKEN_SERVICE = "swarmreg"
# Password verifications (scrypt, in worker threads) running at once.
PASSWORD_THREADS = 2


class ProxyService:
    """Docker pushes and pulls on the proxy port, until the daemon stops."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config.proxy
        tokens = None
        if self.config.auth == "token":
            secret = self.config.token_secret.encode() or os.urandom(32)
            tokens = TokenIssuer(secret, TOKEN_SERVICE, self.config.token_ttl)
        # scrypt runs in worker threads, this many at once: guessing passwords takes at most two
        # cores and never the event loop.
        self.password_limiter = trio.CapacityLimiter(PASSWORD_THREADS)
        throttle = FailureThrottle(self.config.auth_failure_limit, self.config.auth_failure_window)
        basic = BasicAuth(self.config.users, limiter=self.password_limiter, throttle=throttle)
        self.auth = Authorizer(basic, Access(self.config.access), tokens, self.config.token_realm)

    def _origin_client(self, ring: Ring) -> OriginClient:
        """The client of the origins: in-process calls to this daemon's own origin where the ring
        picks it (swarmreg.origin.local), HTTP to the others."""
        tls, secret, node = self.node.tls.client, self.node.config.cluster.secret, self.node
        if node.local_origin is not None and "origin" in node.bound:
            local = Address.parse(node.bound["origin"]["http"])
            return LocalOrigin(cast("OriginService", node.local_origin), local, ring, tls=tls, secret=secret)
        return OriginClient(ring, tls=tls, secret=secret)

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        tls, secret = self.node.tls.client, self.node.config.cluster.secret
        node = self.node
        rings = {"origin": node.ring("origin", self.config.origin), "index": node.ring("index", self.config.index)}
        async with (self._origin_client(rings["origin"]) as origin,
                    IndexClient(rings["index"], tls=tls, secret=secret) as index,
                    trio.open_nursery() as nursery):
            app = create_proxy_app(self.auth, index, origin, idle_timeout=self.node.config.http.idle_timeout,
                                   max_manifest=self.config.max_manifest_size,
                                   default_registry=self.node.config.default_registry)
            # Preheat jobs run in this nursery; "agents" are found through the tracker.
            tracker = self.config.tracker
            if tracker is None and "tracker" in self.node.bound:
                tracker = Address.parse(self.node.bound["tracker"]["ws"])
            trackers = node.rings.get("tracker") or (Ring.static("tracker", tracker) if tracker else None)
            preheater = Preheater(index, origin, TrackerAgents(trackers, tls=tls, secret=secret),
                                  max_running=self.config.preheat_jobs)
            await nursery.start(preheater.run, self.node.stop)
            add_preheat_routes(app, preheater, self.auth, idle_timeout=self.node.config.http.idle_timeout,
                               default_registry=self.node.config.default_registry)
            if trackers is not None:
                rings["tracker"] = trackers
            bound: list[Address] = []  # the status names the proxy's address, known once it listens
            add_admin_routes(app, self.auth, index, origin, ClusterStatus(rings, lambda: bound[0], tls))
            add_status_route(app, node)
            address: Address = await nursery.start(partial(
                serve_http, app, self.config.listen, http=self.node.config.http,
                stop=self.node.stop, graceful_timeout=self.node.config.shutdown_timeout,
                metrics=self.node.metrics,
                tls=ServerTls.edge(self.config.tls)))
            bound.append(address)
            log.info("proxy listening on %s://%s%s", "https" if self.config.tls.enabled else "http", address,
                     "" if self.auth.enabled else " (no authentication: proxy.users is empty)")
            task_status.started({"http": str(address)})

