"""Paths every role's HTTP port serves (``swarmreg.http.routes`` adds their routes)."""

from __future__ import annotations

HEALTH = "/health"
# The health answer's header naming this run of the daemon (random at each start): a ring's
# probe tells a member that restarted (perhaps with an empty disk) from one that stayed up.
INSTANCE_HEADER = "X-Swarmreg-Instance"
STATS = "/stats"
# The status page (HTML for people; it reads STATS).
STATUS = "/status"
METRICS = "/metrics"  # Prometheus' text format of the daemon's registry (swarmreg.metrics)
