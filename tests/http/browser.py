"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol with
trio-websocket: open a page, evaluate script in it, take a screenshot.

Each browser gets a fresh profile under the test's tmp_path and is killed when the test ends.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
# A loaded two-core machine takes a few seconds to start it.
START_TIMEOUT = 60
# Screenshots come back base64 in one message.
MAX_MESSAGE = 64 << 20


class Page:
    """One tab: commands in order, one at a time; events that arrive meanwhile are kept."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run a DevTools command; its result (an error answer raises)."""
        self._next_id += 1
        sent = self._next_id
        await self.ws.send_message(json.dumps({"id": sent, "method": method, "params": params}))
        with trio.fail_after(30):
            while True:
                message = json.loads(await self.ws.get_message())
                if message.get("id") == sent:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message.get("result", {})
                    return result
                if "method" in message:
                    self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        """The value of a script expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        with trio.fail_after(timeout):
            while not (value := await self.evaluate(expression)):
                await trio.sleep(0.2)
        return value

    async def open(self, url: str, *, width: int, height: int, mobile: bool = False) -> None:
        """Load ``url`` in a window of ``width`` x ``height`` CSS pixels (a phone's with ``mobile``)."""
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Page.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=2 if mobile else 1, mobile=mobile)
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page, also written to ``path``."""
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        data = base64.b64decode(result["data"])
        path.write_bytes(data)
        return data

    def problems(self) -> list[dict[str, Any]]:
        """Script exceptions and console errors seen so far (a CSP refusal is one)."""
        return [e for e in self.events if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]


async def _devtools_port(profile: Path, process: trio.Process) -> int:
    """The port Chromium's DevTools listen on, from the file it writes in its profile."""
    marker = profile / "DevToolsActivePort"
    with trio.fail_after(START_TIMEOUT):
        while not marker.exists() or not marker.read_text().strip():
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}; see {profile.parent}/chromium.log")
            await trio.sleep(0.1)
    return int(marker.read_text().split()[0])


@asynccontextmanager
async def chromium_page(tmp_path: Path) -> AsyncIterator[Page]:
    """A tab of a fresh headless Chromium; skips when Debian's chromium is not installed."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/debian-packages.txt lists it)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with open(tmp_path / "chromium.log", "wb") as log:
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(partial(
                trio.run_process, [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                check=False, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            try:
                port = await _devtools_port(profile, process)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    target = (await client.put("/json/new?about:blank")).json()
                async with open_websocket_url(target["webSocketDebuggerUrl"], max_message_size=MAX_MESSAGE) as ws:
                    yield Page(ws)
            finally:
                process.kill()  # the browser this test started; nothing of it is kept
                nursery.cancel_scope.cancel()
