"""The agent's blob API on its server port (Kraken's agent download endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import request
from quart_trio import QuartTrio

from swarmreg.agent.downloads import DownloadBody
from swarmreg.digest import Digest
from swarmreg.http.app import PlainResponse as Response
from swarmreg.http.app import create_base_app
from swarmreg.http.responses import blob_response
from swarmreg.names import validate_namespace
from swarmreg.swarm.stats import add_stats_route

if TYPE_CHECKING:
    from swarmreg.agent.service import AgentService

BLOB = "/namespace/<path:namespace>/blobs/<digest>"
EMPTY = Digest.of(b"")


def create_agent_app(agent: AgentService) -> QuartTrio:
    """The agent's Quart app: GET/HEAD of blobs by namespace and digest, health, counters."""
    app = create_base_app("agent")
    chunk_size = agent.config.store.chunk_size

    @app.get("/health")
    async def health() -> Response:
        return Response("OK\n")

    add_stats_route(app, agent.engine)

    @app.route(BLOB, methods=["GET", "HEAD"])
    async def get_blob(namespace: str, digest: str) -> Response:
        namespace, parsed = validate_namespace(namespace), Digest.parse(digest)
        range_header = request.headers.get("Range")
        head = request.method == "HEAD"
        if parsed == EMPTY:  # its content is known: no torrent can describe zero bytes
            return blob_response(parsed, 0, None, range_header)
        if (opened := agent.open_local(parsed)) is not None:
            body, size = opened
            if head:
                body.close()
            return blob_response(parsed, size, None if head else body, range_header)
        assert agent.downloads is not None
        if head:
            metainfo = await agent.downloads.metainfo(namespace, parsed)
            return blob_response(parsed, metainfo.size, None, range_header)
        download = await agent.downloads.start(namespace, parsed)
        assert download.metainfo is not None
        size = download.metainfo.size
        body = DownloadBody(download, agent.engine, 0, size, chunk_size)
        return blob_response(parsed, size, body, range_header)

    return app
