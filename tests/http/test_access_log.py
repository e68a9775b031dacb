"""The access log: every request, but the rings' health probes only at debug level."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

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

    def logged() -> list[str]:
        return [record.getMessage().split('"')[1] for record in caplog.records
                if record.name.startswith("swarmreg.access")]

    with trio.fail_after(5):  # hypercorn logs a request once its response is sent, so may lag behind it
        while len(logged()) < 3:
            await trio.sleep(0.01)
    await trio.sleep(0.1)  # and nothing more comes
    assert logged() == ["GET /health/x 1.1", "HEAD /health 1.1", "GET /health 1.1"]
