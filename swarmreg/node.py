"""What the roles of one daemon share: configuration, stores, backends, the swarm engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from swarmreg.backends.router import BackendRouter
from swarmreg.config import Config
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
