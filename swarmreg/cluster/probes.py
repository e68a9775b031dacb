"""Health probes of ring members: ``GET /health`` on an HTTP port, a websocket handshake at the
tracker's health path on its port (which speaks only websocket)."""

from __future__ import annotations

import ssl

import httpx
from trio_websocket import open_websocket

from swarmreg.cluster.ring import Probe
from swarmreg.config import Address
from swarmreg.http.paths import HEALTH, INSTANCE_HEADER
from swarmreg.tracker.wire import HEALTH_PATH


def http_probe(tls: ssl.SSLContext | None) -> Probe:
    """A probe that wants 200 from ``GET /health`` (HTTPS with the cluster's client context); it
    returns the member's instance (INSTANCE_HEADER)."""

    async def probe(member: Address) -> str | None:
        async with httpx.AsyncClient(verify=tls or True, timeout=5.0) as client:
            response = await client.get(f"{'https' if tls else 'http'}://{member}{HEALTH}")
            response.raise_for_status()
            instance: str | None = response.headers.get(INSTANCE_HEADER)
            return instance

    return probe


def websocket_probe(tls: ssl.SSLContext | None) -> Probe:
    """A probe that wants the tracker to accept a websocket at its health path."""

    async def probe(member: Address) -> str | None:
        async with open_websocket(member.host, member.port, HEALTH_PATH, use_ssl=tls or False, connect_timeout=5,
                                  disconnect_timeout=1):
            pass
        return None  # (no header to name its run)

    return probe
