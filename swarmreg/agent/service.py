"""The agent service: the blob download API, the registry port, the tracker connection, and seeding."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import trio
from prometheus_client.core import Metric

from swarmreg.agent.app import create_agent_app
from swarmreg.agent.cache import BlobCache
from swarmreg.agent.content import LinkedContent, SwarmContent
from swarmreg.agent.downloads import Downloads
from swarmreg.agent.index_cache import CachedIndex
from swarmreg.agent.prefetch import Prefetches
from swarmreg.agent.registry import create_registry_app
from swarmreg.agent.relay import Relays
from swarmreg.authz import ClusterGuard
from swarmreg.config import Address
from swarmreg.http.routes import add_status_route
from swarmreg.http.serve import serve_http
from swarmreg.index.client import IndexClient
from swarmreg.metrics import ByteCounts, FamiliesCollector, counter, gauge, labelled
from swarmreg.node import Node
from swarmreg.swarm.torrent import Torrent
from swarmreg.tls.context import ServerTls
from swarmreg.tracker.client import Announcement, TrackerClient
from swarmreg.tracker.wire import Peer

log = logging.getLogger(__name__)


class AgentService:
    """Serves blobs from the local store, fetching missing ones through the swarm."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.store = node.store
        self.engine = node.require_engine()
        self.tracker = TrackerClient(
            node.ring("tracker", node.config.agent.tracker), port=self._peer_port, peer_id=self.engine.peer_id,
            announcements=self._announcements, on_peers=self._on_peers,
            attempts=node.config.agent.tracker_attempts, tls=node.tls.client,
            secret=node.config.cluster.secret)
        self.downloads: Downloads | None = None
        self.cache: BlobCache | None = None
        self.relays: Relays | None = None
        self.content: SwarmContent | None = None
        node.metrics.add(FamiliesCollector(self._families))
        node.metrics.byte_sources.append(self._byte_counts)

    def _cache(self) -> BlobCache:
        """The blob cache of [agent.cache]; it evicts nothing when an origin role in this daemon
        shares the store (the origin's blobs are not a cache)."""
        shared = "origin" in self.node.bound
        if shared and self.config.agent.cache != type(self.config.agent.cache)():
            log.warning("agent.cache is ignored: the origin role in this daemon shares its blob store")
        return BlobCache(self.config.agent.cache, self.config.layout, self.store,
                         wait_for_room=self.config.agent.stall_timeout, evicts=not shared)

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        async with IndexClient(self.node.ring("index", self.config.agent.index), tls=self.node.tls.client,
                               secret=self.config.cluster.secret) as index, \
                trio.open_nursery() as nursery:
            cache = self.cache = self._cache()
            downloads = self.downloads = Downloads(self.node, self.tracker, nursery, self.config.layout.downloads,
                                                   cache)
            cache.drop = downloads.drop
            relays = self.relays = Relays(self.node, downloads, nursery)
            content = self.content = SwarmContent(self.store, downloads, relays)
            await trio.to_thread.run_sync(cache.load)
            await cache.sweep()  # limits lowered, or a full cache after a crash: before anything is seeded
            await nursery.start(self.tracker.run, self.node.stop)
            await self.node.seed_held()  # the tracker hears of these on connect
            await nursery.start(cache.run, self.node.stop)
            serve = partial(serve_http, http=self.config.http, stop=self.node.stop, metrics=self.node.metrics,
                            graceful_timeout=self.config.shutdown_timeout)
            prefetches = Prefetches(self.store, downloads, relays, nursery)
            app = create_agent_app(content, self._stats, prefetches, ClusterGuard.from_config(self.config),
                                   cache=cache, admin_remote=self.config.agent.cache.admin_remote, node=self.node)
            address: Address = await nursery.start(serve, app, self.config.agent.listen)
            # The proxy's preheat finds this blob API through the tracker.
            await self.tracker.register_api(address.port)
            registry_tls = self.config.agent.registry_tls
            cached = CachedIndex(index, self.config.agent.tag_ttl, nursery)
            registry_app = create_registry_app(LinkedContent(content, cached), cached,
                                               default_registry=self.config.default_registry)
            add_status_route(registry_app, self.node)
            registry: Address = await nursery.start(partial(
                serve, registry_app, self.config.agent.registry_listen, tls=ServerTls.edge(registry_tls)))
            log.info("agent listening on http://%s (blobs) and %s://%s (registry)", address,
                     "https" if registry_tls.enabled else "http", registry)
            task_status.started({"http": str(address), "registry": str(registry), "peer": str(self.engine.address)})

    def _stats(self, peers: bool) -> dict[str, Any]:
        inline = self.downloads.inline_stats() if self.downloads is not None else {}
        cache = self.cache.stats() if self.cache is not None else {}
        return self.engine.stats(peers) | {"inline": inline, "cache": cache}

    def _byte_counts(self) -> ByteCounts:
        """Blob bytes that came from origins outside the peer wire: relayed, or inline with the metainfo."""
        relayed = self.relays.received if self.relays is not None else 0
        inline = self.downloads.inline_bytes if self.downloads is not None else 0
        return {("received", "origin"): relayed + inline}

    def _families(self) -> Iterator[Metric]:
        """The agent's series (docs/metrics.md), from the counters its /stats reports."""
        if self.content is not None:
            yield counter("swarmreg_agent_cache_hits_total", "Blob and manifest reads found in the store.",
                          self.content.hits)
            yield counter("swarmreg_agent_cache_misses_total", "Blob and manifest reads that came through the swarm.",
                          self.content.misses)
        if self.cache is None:
            return
        cache = self.cache
        yield gauge("swarmreg_agent_cache_blobs", "Blobs the agent's cache holds.", cache.stats()["held"])
        yield gauge("swarmreg_agent_cache_bytes", "Disk the agent's cache takes: held blobs, downloads, reservations.",
                    cache.used)
        reasons = sorted(cache.evicted)
        yield labelled("swarmreg_agent_cache_evictions", "Blobs evicted, by reason.", ("reason",),
                       [((r,), cache.evicted[r]) for r in reasons])
        yield labelled("swarmreg_agent_cache_evicted_bytes", "Bytes of the blobs evicted, by reason.", ("reason",),
                       [((r,), cache.evicted_bytes[r]) for r in reasons])

    def _peer_port(self) -> int:
        assert self.engine.address is not None, "the engine listens before the agent starts"
        return self.engine.address.port

    def _announcements(self) -> list[Announcement]:
        return [Announcement(t.info_hash, str(t.metainfo.digest), t.namespace, t.finished.is_set(),
                             progress=t.have_count)
                for t in self.engine]

    def _on_peers(self, info_hash: str, peers: tuple[Peer, ...]) -> None:
        torrent: Torrent | None = self.engine.get(info_hash)
        if torrent is None:
            return
        me = self.engine.address
        assert me is not None, "the engine listens before the agent starts"
        log.debug("peers for %s: %s", info_hash[:12], [(p.host, p.port, p.origin) for p in peers])
        torrent.origins.update((p.host, p.port) for p in peers if p.origin)
        torrent.connect((p.host, p.port) for p in peers
                        if p.peer_id != self.engine.peer_id and (p.host, p.port) != (me.host, me.port))
