"""The access log: every request, but the rings' health probes only at debug level."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import RunningDaemon


async def test_health_probes_are_logged_at_debug_level_only(origin: RunningDaemon,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="swarmreg.access")
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=10) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health/x")).status_code == 404
        caplog.set_level(logging.DEBUG, logger="swarmreg.access")
        assert (await client.head("/health")).status_code == 200
        assert (await client.get("/health")).status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("swarmreg.access")]
    assert [line.split('"')[1] for line in lines] == ["GET /health/x 1.1", "HEAD /health 1.1", "GET /health 1.1"]
