"""The rings a daemon's clients use: one per role listed in ``[cluster]``, or the one member a
role's own address key names (docs/cluster.md, "Precedence")."""

from __future__ import annotations

import ssl

from swarmreg.cluster.probes import http_probe, websocket_probe
from swarmreg.cluster.ring import Probe, Ring
from swarmreg.config import Address, ClusterConfig

# The roles that have rings, and their [cluster] keys.
RING_KEYS = {"origin": "origins", "tracker": "trackers", "index": "indexes"}


def role_probe(role: str, tls: ssl.SSLContext | None) -> Probe:
    """How a member of ``role`` is checked: a websocket handshake for a tracker, else ``GET /health``."""
    return websocket_probe(tls) if role == "tracker" else http_probe(tls)


def cluster_rings(cluster: ClusterConfig, tls: ssl.SSLContext | None) -> dict[str, Ring]:
    """A probed ring for each role that ``[cluster]`` lists members of (to be run as services)."""
    rings = {}
    for role, key in RING_KEYS.items():
        source = getattr(cluster, key)
        if source == ():
            continue
        rings[role] = Ring(role, source, probe=role_probe(role, tls), health_interval=cluster.health_interval,
                           resolve_interval=cluster.resolve_interval, max_backoff=cluster.max_backoff)
    return rings


def ring_for(rings: dict[str, Ring], role: str, fallback: Address | None) -> Ring | None:
    """The ``[cluster]`` ring of ``role`` if there is one, else a ring of the one ``fallback``
    (a role's own address key, or the role in the same daemon); None without either."""
    if role in rings:
        return rings[role]
    return Ring.static(role, fallback) if fallback is not None else None
