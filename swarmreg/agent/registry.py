"""The agent's read-only Docker registry port: `docker pull localhost:16000/repo:tag`.

Tags and manifest records come from the index; manifests and layers come through
the swarm (or the local store, once held). Every method but GET and HEAD is 405.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from quart import request
from quart_trio import QuartTrio

from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, UNSUPPORTED, SwarmregError
from swarmreg.http.app import create_base_app
from swarmreg.agent.index_cache import CachedIndex
from swarmreg.index.client import IndexClient
from swarmreg.registry.read import add_read_routes

if TYPE_CHECKING:
    from swarmreg.agent.service import AgentService

EMPTY = Digest.of(b"")


class SwarmContent:
    """The agent's Content: the local store first, then the swarm."""

    def __init__(self, agent: AgentService) -> None:
        self.agent = agent

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        if digest == EMPTY:
            return 0
        if (size := self.agent.store.size(digest)) is not None:
            return size
        try:
            return (await self.agent.require_downloads().metainfo(repository, digest)).size
        except SwarmregError as error:
            if error.code is BLOB_UNKNOWN:
                return None
            raise

    async def open_blob(self, repository: str, digest: Digest, size: int, start: int, end: int) -> Any:
        if end <= start:
            return b""
        if (opened := self.agent.store.open_body(digest, start, end)) is not None:
            return opened[0]
        return await self.agent.stream(repository, digest, start, end)

    async def manifest_bytes(self, repository: str, digest: Digest) -> bytes:
        path = self.agent.store.path(digest)
        if digest not in self.agent.store:
            await self.agent.require_downloads().metainfo(repository, digest)  # small: often inline
        if digest not in self.agent.store:
            download = await self.agent.require_downloads().start(repository, digest)
            await download.done.wait()
            if download.error is not None:
                raise download.error
        return await trio.to_thread.run_sync(path.read_bytes)


def create_registry_app(agent: AgentService, index: IndexClient | CachedIndex) -> QuartTrio:
    """The agent's registry app: the pull side of the registry API, nothing else."""
    app = create_base_app("agent-registry")

    @app.before_request
    async def _read_only() -> None:
        if request.method not in ("GET", "HEAD"):
            raise SwarmregError(UNSUPPORTED, "this agent's registry is read-only: push to the proxy")

    add_read_routes(app, index, SwarmContent(agent))
    return app
