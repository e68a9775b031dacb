"""The index service: the metadata store served over HTTP until the daemon stops."""

from __future__ import annotations

import logging
from functools import partial

import trio

from swarmreg.authz import ClusterGuard
from swarmreg.config import Address
from swarmreg.http.serve import serve_http
from swarmreg.index.app import create_index_app
from swarmreg.index.store import IndexStore
from swarmreg.node import Node
from swarmreg.tls.context import ServerTls

log = logging.getLogger(__name__)


class IndexService:
    """Keeps tags, manifests and blob links in SQLite and serves them to proxies and agents."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.stop = node.stop
        self.store = IndexStore(self.config.layout.setting(self.config.index.database), fsync=self.config.store.fsync)

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the index API until ``stop`` is set; reports ``{"http": "host:port"}`` once bound."""
        async with self.store:
            log.info("index database %s", self.store.path)
            async with trio.open_nursery() as nursery:
                address: Address = await nursery.start(partial(
                    serve_http, create_index_app(self.store, idle_timeout=self.config.http.idle_timeout,
                                                 guard=ClusterGuard.from_config(self.config)),
                    self.config.index.listen, http=self.config.http, stop=self.stop,
                    graceful_timeout=self.config.shutdown_timeout, tls=ServerTls.cluster(self.config.tls)))
                log.info("index listening on %s://%s", self.node.tls.http, address)
                task_status.started({"http": str(address)})
