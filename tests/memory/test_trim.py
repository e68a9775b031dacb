"""The daemon's periodic heap trim (swarmreg.malloc.trim_periodically): it runs, a failure is
logged and the next trim still happens, 0 turns it off, and a real daemon runs it while serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.malloc import malloc_trimmer, trim_periodically


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_failed_trim_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no memory to trim")
        return 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trim_periodically, 0.01, trim)
        await _until(lambda: len(calls) >= 3)
        nursery.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "swarmreg.malloc"]
    assert [r.getMessage() for r in failures] == ["malloc_trim failed: OSError: no memory to trim"]


async def test_interval_zero_never_trims() -> None:
    calls: list[int] = []
    with trio.fail_after(5):
        await trim_periodically(0, lambda: calls.append(1))  # returns at once: nothing to cancel
    assert calls == []


async def test_glibc_trim_runs(caplog: pytest.LogCaptureFixture) -> None:
    if malloc_trimmer() is None:
        pytest.skip("no malloc_trim in this C library")
    caplog.set_level(logging.DEBUG, logger="swarmreg.malloc")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trim_periodically, 0.01)
        await _until(lambda: sum("malloc_trim: RSS" in r.getMessage() for r in caplog.records) >= 2)
        nursery.cancel_scope.cancel()


async def test_a_daemon_trims_while_it_serves(spawn, tmp_path: Path) -> None:
    if malloc_trimmer() is None:
        pytest.skip("no malloc_trim in this C library")
    daemon = await spawn("origin", ["origin"], "malloc_trim_interval=0.05", 'log.level="debug"')
    log = tmp_path / "origin.log"
    await _until(lambda: log.read_text().count("malloc_trim: RSS") >= 2, 20)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{daemon.url('origin')}/health")).status_code == 200
    assert await daemon.stop() == 0
