"""HTTP pieces of the swarm shared by the roles that run it: counters, and who the seeder is."""

from __future__ import annotations

import json

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.swarm.engine import SwarmEngine

# An origin's metainfo response names the peer that seeds it, for the tracker.
PEER_ID_HEADER = "Swarm-Peer-Id"
PEER_PORT_HEADER = "Swarm-Peer-Port"


def add_stats_route(app: QuartTrio, engine: SwarmEngine) -> None:
    """``GET /stats``: per-torrent and total counters of the daemon's swarm engine;
    ``?peers=1`` adds each connected peer's state."""

    @app.get("/stats")
    async def stats() -> Response:
        peers = request.args.get("peers", "") in ("1", "true")
        return Response(json.dumps(engine.stats(peers)), content_type="application/json")
