"""The index service: the metadata store served over HTTP until the daemon stops."""

from __future__ import annotations

import logging
from functools import partial

import trio

from swarmreg.authz import ClusterGuard
from swarmreg.config import Address
from swarmreg.errors import UNAVAILABLE, SwarmregError
from swarmreg.http.routes import add_status_route
from swarmreg.http.serve import serve_http
from swarmreg.index.access_times import AccessTimes
from swarmreg.index.app import create_index_app
from swarmreg.index.prune import PruneSchedule
from swarmreg.index.pullthrough import ManifestSink, PullThrough, StoreSink
from swarmreg.index.replicator import ReplicationRules, Replicator, node_id
from swarmreg.index.stores import store_from_config
from swarmreg.node import Node
from swarmreg.origin.client import OriginClient
from swarmreg.tls.context import ServerTls
from swarmreg.upstream.client import Upstreams

log = logging.getLogger(__name__)


class IndexService:
    """Keeps tags, manifests and blob links in its store (SQLite, or PostgreSQL) and serves them to proxies and agents;
    tags and manifests of upstream repositories it lacks are fetched from their registries; tags pushed to
    repositories an [[index.replicate]] rule names are sent on to its remote cluster."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.stop = node.stop
        self.store = store_from_config(self.config)
        self.upstreams = Upstreams(self.config.registries)
        self.pull_through = PullThrough.from_config(self.config, self.store, self.upstreams, self._manifest_sink)
        self._origin: OriginClient | None = None
        self.access_times = AccessTimes(self.store)
        self.replicator: Replicator | None = None

    def _manifest_sink(self) -> ManifestSink:
        if self._origin is not None:
            return self._origin
        if "origin" in self.node.bound:  # started before the index, in this daemon
            return StoreSink(self.node.store)
        raise SwarmregError(UNAVAILABLE, "pulling through to an upstream needs an origin: set index.origin, "
                            "or run the origin role in the index's daemon")

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the index API until ``stop`` is set; reports ``{"http": "host:port"}`` once bound."""
        async with self.store, self.upstreams:
            if self.config.index.origin is not None or "origin" in self.node.rings:  # origins elsewhere
                self._origin = OriginClient(self.node.ring("origin", self.config.index.origin),
                                            tls=self.node.tls.client, secret=self.config.cluster.secret)
            try:
                log.info("index database: %s", self.store.describe())
                async with trio.open_nursery() as nursery:
                    self.pull_through.bind(nursery)
                    await nursery.start(self.access_times.run, self.stop)
                    if self.config.index.replicate:
                        await self._start_replicator(nursery)
                    if self.config.prune.enabled:
                        await nursery.start(PruneSchedule(self.store, self.config.prune, self.stop,
                                                          before=self.access_times.flush).run)
                    app = create_index_app(self.store, idle_timeout=self.config.http.idle_timeout,
                                           guard=ClusterGuard.from_config(self.config), pull_through=self.pull_through,
                                           access_times=self.access_times, replication=self.replicator)
                    add_status_route(app, self.node)
                    address: Address = await nursery.start(partial(
                        serve_http, app, self.config.index.listen, http=self.config.http, stop=self.stop,
                        graceful_timeout=self.config.shutdown_timeout, metrics=self.node.metrics,
                        tls=ServerTls.cluster(self.config.tls)))
                    log.info("index listening on %s://%s", self.node.tls.http, address)
                    task_status.started({"http": str(address)})
            finally:
                # Pulls answered while the server drained, after the flusher's last write.
                await self.access_times.close()
                with trio.CancelScope(shield=True):
                    for client in (self._origin, self.replicator.origin if self.replicator else None):
                        if client is not None:
                            await client.aclose()

    async def _start_replicator(self, nursery: trio.Nursery) -> None:
        """Start the replicator of [[index.replicate]], reading manifests and blobs from the origins
        (the daemon checked there are some to read from)."""
        origin = OriginClient(self.node.ring("origin", self.config.index.origin), tls=self.node.tls.client,
                              secret=self.config.cluster.secret)
        self.replicator = Replicator(self.store, ReplicationRules(self.config.index.replicate), origin,
                                     node_id(self.config.layout.index_node), stop=self.stop,
                                     cluster_tls=self.node.tls.client)
        await nursery.start(self.replicator.run)
