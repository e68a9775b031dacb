"""The agent's wire contract: its blob API has Kraken's agent download endpoint, which is the
origin's blob path (``GET/HEAD /namespace/<namespace>/blobs/<digest>``), beside ``/health``
and ``/stats``. Its registry port speaks the registry API's read side (swarmreg.registry.read).
"""

from __future__ import annotations

from swarmreg.http.paths import HEALTH, STATS
from swarmreg.origin.wire import BLOB_ROUTE, blob_path

__all__ = ["BLOB_ROUTE", "HEALTH", "STATS", "blob_path"]
