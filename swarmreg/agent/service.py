"""The agent service: the blob download API, the tracker connection, and seeding."""

from __future__ import annotations

import logging
from functools import partial

import trio

from swarmreg.agent.downloads import Downloads
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.http.body import FileBody
from swarmreg.http.serve import serve_http
from swarmreg.node import Node
from swarmreg.swarm.torrent import Torrent
from swarmreg.tracker.client import Announcement, TrackerClient
from swarmreg.tracker.messages import Peer

log = logging.getLogger(__name__)


class AgentService:
    """Serves blobs from the local store, fetching missing ones through the swarm."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.store = node.store
        self.engine = node.require_engine()
        self.tracker = TrackerClient(
            node.config.agent.tracker, port=lambda: self.engine.address.port, peer_id=self.engine.peer_id,
            announcements=self._announcements, on_peers=self._on_peers,
            attempts=node.config.agent.tracker_attempts)
        self.downloads: Downloads | None = None

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        from swarmreg.agent.app import create_agent_app

        async with trio.open_nursery() as nursery:
            self.downloads = Downloads(self.node, self.tracker, nursery, self.config.data_path("downloads"))
            await nursery.start(self.tracker.run, self.node.stop)
            await self.node.seed_held()  # the tracker hears of these on connect
            address: Address = await nursery.start(partial(
                serve_http, create_agent_app(self), self.config.agent.listen, http=self.config.http,
                stop=self.node.stop, graceful_timeout=self.config.shutdown_timeout))
            log.info("agent listening on http://%s", address)
            task_status.started({"http": str(address), "peer": str(self.engine.address)})

    def _announcements(self) -> list[Announcement]:
        return [Announcement(t.info_hash, str(t.metainfo.digest), t.namespace, t.finished.is_set())
                for t in self.engine]

    def _on_peers(self, info_hash: str, peers: tuple[Peer, ...]) -> None:
        torrent: Torrent | None = self.engine.get(info_hash)
        if torrent is None:
            return
        me = self.engine.address
        log.debug("peers for %s: %s", info_hash[:12], [(p.host, p.port, p.origin) for p in peers])
        torrent.origins.update((p.host, p.port) for p in peers if p.origin)
        torrent.connect((p.host, p.port) for p in peers
                        if p.peer_id != self.engine.peer_id and (p.host, p.port) != (me.host, me.port))

    def open_local(self, digest: Digest) -> tuple[FileBody, int] | None:
        return self.store.open_body(digest)

