"""The agent's wire contract: its blob API has Kraken's agent download endpoint, which is the
origin's blob path (``GET/HEAD /namespace/<namespace>/blobs/<digest>``), beside ``/health``
and ``/stats``, and the proxy's preheat asks it to fetch blobs ahead of a pull
(``POST`` and ``GET`` of that path + ``/prefetch``); a local admin lists the blobs it holds and
evicts one (``GET /cmd/blob/list``, ``DELETE /cmd/evict?digest=``: docs/cache.md). Its registry
port speaks the registry API's read side (swarmreg.registry.read).
"""

from __future__ import annotations

from swarmreg.http.paths import HEALTH, STATS
from swarmreg.origin.wire import BLOB_ROUTE, blob_path

__all__ = ["BLOB_ROUTE", "HEALTH", "STATS", "blob_path"]

# Suffix of BLOB_ROUTE: POST starts fetching the blob into the agent's store (202 at once, for the
# proxy role or the cluster secret only); GET tells how that went. Both answer
# {"namespace", "digest", "state", "error"?} with state one of PREFETCH_STATES.
PREFETCH = "/prefetch"
PREFETCH_RUNNING, PREFETCH_DONE, PREFETCH_FAILED = "running", "done", "failed"
PREFETCH_STATES = (PREFETCH_RUNNING, PREFETCH_DONE, PREFETCH_FAILED)
# Prefetches one agent runs at once (more: 429 with Retry-After), and finished ones it remembers.
MAX_PREFETCHES = 64
KEPT_PREFETCHES = 4096

# The local admin on the blob port, for loopback clients only unless agent.cache.admin_remote:
# the held blobs (columns as `column -t` prints them; JSON with Accept: application/json), least
# recently read first, each with BLOB_COLUMNS; and evicting one held blob now (404 BLOB_UNKNOWN if
# not held, 409 BLOB_IN_USE while a response streams it or a download writes it).
BLOB_LIST = "/cmd/blob/list"
EVICT = "/cmd/evict"
BLOB_COLUMNS = ("digest", "size", "last_read", "held_since", "pinned")
