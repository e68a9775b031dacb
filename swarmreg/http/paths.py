"""Paths every role's HTTP port serves (``swarmreg.http.routes`` adds their routes)."""

from __future__ import annotations

HEALTH = "/health"
STATS = "/stats"
