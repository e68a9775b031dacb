"""What the roles of one daemon share: configuration, stores, backends, the swarm engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from swarmreg.backends.router import BackendRouter
from swarmreg.cluster.ring import Ring
from swarmreg.cluster.rings import ring_for
from swarmreg.config import Address, Config
from swarmreg.metrics import Metrics
from swarmreg.status import NodeStatus
from swarmreg.store.blobstore import BlobStore
from swarmreg.swarm.metainfo import MetainfoCache
from swarmreg.tls.context import ClusterTls

if TYPE_CHECKING:
    from swarmreg.swarm.engine import SwarmEngine


@attrs.define(eq=False)
class Node:
    """One daemon's shared state; each role service is built from it."""

    config: Config
    store: BlobStore
    backends: BackendRouter
    metainfo: MetainfoCache
    # Plain or mutual TLS on every channel between nodes (the [tls] section).
    tls: ClusterTls = attrs.field(factory=ClusterTls)
    # Set when the daemon starts stopping: services stop accepting work.
    stop: trio.Event = attrs.field(factory=trio.Event)
    # The libtorrent session, when a role that moves blobs (agent, origin) runs.
    engine: SwarmEngine | None = None
    # What each role started so far has bound, e.g. {"origin": {"http": "127.0.0.1:15002"}}.
    bound: dict[str, dict[str, str]] = attrs.field(factory=dict)
    # This daemon's origin service (a swarmreg.origin.service.OriginService, untyped here: the node
    # is below every role), when it runs the origin role: the proxy beside it calls it in-process
    # (swarmreg.origin.local) rather than over HTTP.
    local_origin: object | None = None
    # The rings of the roles [cluster] lists (run by the daemon), by role: "origin", "tracker", "index".
    rings: dict[str, Ring] = attrs.field(factory=dict)
    # Its start, latest errors and the roles' figures for the status page (GET /status).
    status: NodeStatus = attrs.field(factory=NodeStatus)
    # This daemon's Prometheus registry, served at /metrics on each of its HTTP ports.
    metrics: Metrics = attrs.field(factory=Metrics)

    def ring(self, role: str, configured: Address | None, port: str = "http") -> Ring:
        """The members of ``role`` this daemon's clients use: its [cluster] ring, else the one
        address the role's own key names (``configured``), else the role in this daemon (which
        the daemon checked runs, and started first)."""
        if configured is None and role not in self.rings:
            configured = Address.parse(self.bound[role][port])
        ring = ring_for(self.rings, role, configured)
        assert ring is not None
        return ring

    async def seed_held(self) -> int:
        """Seed every held blob whose metainfo is cached (no hashing); returns how many."""
        engine = self.require_engine()
        digests = await trio.to_thread.run_sync(lambda: list(self.store.digests()))
        seeded = 0
        for digest in digests:
            if (metainfo := self.metainfo.get(digest)) is not None:
                await engine.add(metainfo, self.store.path(digest).parent, seed=True,
                                 namespace=self.metainfo.namespace(digest))
                seeded += 1
        return seeded

    def require_engine(self) -> SwarmEngine:
        assert self.engine is not None, "the daemon starts the swarm engine for this role"
        return self.engine
