"""HTTP pieces of the swarm shared by the roles that run it: counters, and who the seeder is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.swarm.engine import SwarmEngine

# An origin's metainfo response names the peer that seeds it, for the tracker.
PEER_ID_HEADER = "Swarm-Peer-Id"
PEER_PORT_HEADER = "Swarm-Peer-Port"


def add_stats_route(app: QuartTrio, engine: SwarmEngine,
                    extra: Callable[[], dict[str, Any]] | None = None) -> None:
    """``GET /stats``: per-torrent and total counters of the daemon's swarm engine, plus the
    role's own counters from ``extra``; ``?peers=1`` adds each connected peer's state."""

    @app.get("/stats")
    async def stats() -> Response:
        peers = request.args.get("peers", "") in ("1", "true")
        figures = engine.stats(peers) | (extra() if extra is not None else {})
        return Response(json.dumps(figures), content_type="application/json")
