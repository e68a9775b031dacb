"""GET /status on every HTTP port: its headers and figures, and the page itself in a real headless
Chromium while a download is in progress (its live numbers, a phone's width, hostile text)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from swarmreg.http.paths import STATS, STATUS
from swarmreg.status import RECENT_ERRORS
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.http.browser import Page, chromium_page
from tests.origin.helpers import blob_path, upload_blob

NS = "library/status"
# A 32 MiB blob through an agent that takes 1 MiB/s: about half a minute in progress.
SLOW_SIZE = 32 << 20
SLOW_RATE = "1MiB"
# Text a page that parsed its data as HTML would run.
HOSTILE = '<img src=x onerror="window.pwned=1">'

# The first download's bar and figures once they show bytes between none and all.
SHOWN_PROGRESS = """(() => {
  const bar = document.querySelector("#download-list progress");
  if (!bar) return null;
  const done = Number(bar.dataset.done), size = Number(bar.dataset.size);
  if (!(done > 0 && done < size)) return null;
  const item = bar.closest(".download");
  return {done, size, percent: Number(bar.dataset.percent), value: bar.value, max: bar.max,
          digest: item.dataset.digest, text: item.querySelector(".figures").textContent};
})()"""


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *roles: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", *roles])


async def start_agent(nursery: trio.Nursery, tmp_path: Path, herd: RunningDaemon, *overrides: str) -> RunningDaemon:
    index = [f"agent.index={herd.ready['roles']['index']['http']}"] if "index" in herd.ready["roles"] else []
    config = make_config(tmp_path / "agent", f"agent.tracker={herd.ready['roles']['tracker']['ws']}", *index,
                         *overrides)
    return await start_daemon(nursery, config, ["agent"])


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(STATS, params={"status": "1"})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def slow_download(nursery: trio.Nursery, tmp_path: Path) -> tuple[RunningDaemon, RunningDaemon, str]:
    """A herd, and an agent pulling a large blob from it slowly (in ``nursery``, until it ends):
    returns both once the agent's status shows the download with some bytes in."""
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, f"swarm.download_rate_limit={SLOW_RATE}")
    async with httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as client:
        digest = await upload_blob(client, NS, random_bytes(SLOW_SIZE, seed=16), chunk=8 << 20)

    async def pull() -> None:
        async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=120) as client:
            async with client.stream("GET", blob_path(NS, digest)) as response:
                async for _ in response.aiter_bytes():
                    pass

    nursery.start_soon(pull)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=30) as client:
        await download_in(client, digest, lambda d: d["done"] > 0)
    return herd, agent, digest


async def download_in(client: httpx.AsyncClient, digest: str,
                      ready: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
    """The port's status entry of the download of ``digest``, once ``ready`` says it is."""
    with trio.fail_after(30):
        while True:
            found = [d for d in (await stats(client))["status"]["swarm"]["downloads"] if d["digest"] == digest]
            if found and ready(found[0]):
                return found[0]
            await trio.sleep(0.1)


async def test_every_port_serves_the_page_and_its_figures(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, "index", "proxy")
    agent = await start_agent(nursery, tmp_path, herd)
    ports = {"origin": herd.url("origin"), "index": herd.url("index"), "proxy": herd.url("proxy"),
             "agent": agent.url("agent"), "agent registry": agent.url("agent", "registry"),
             "tracker": herd.url("tracker", "ws")}  # the websocket port answers plain HTTP too
    async with httpx.AsyncClient(timeout=30) as client:
        for name, base in ports.items():
            page = await client.get(base + STATUS)
            assert page.status_code == 200, name
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["x-content-type-options"] == "nosniff"
            policy = page.headers["content-security-policy"]
            [nonce] = re.findall(r"script-src 'nonce-([^']+)'", policy)
            assert "default-src 'self'" in policy and f"style-src 'nonce-{nonce}'" in policy
            # The script and style run by that nonce; the page loads nothing from anywhere else.
            assert page.text.count(f'nonce="{nonce}"') == 2
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
            again = await client.get(base + STATUS)
            assert nonce not in again.headers["content-security-policy"], "a fresh nonce for each answer"
            status = (await client.get(base + STATS, params={"status": "1"})).json()["status"]
            assert "status" not in (await client.get(base + STATS)).json(), "only when asked for"
            daemon = herd if name in ("origin", "index", "proxy", "tracker") else agent
            assert status["addresses"] == daemon.ready["roles"], name
            assert status["roles"] == list(daemon.ready["roles"])
            assert status["uptime"] >= 0 and status["held"] == {"blobs": 0, "bytes": 0}
        # The ports with counters of their own keep them.
        origin = (await client.get(ports["origin"] + STATS, params={"status": "1"})).json()
        assert {"peer_id", "totals", "torrents", "gc", "status"} <= set(origin)
        assert origin["status"]["tracker"] == {"connections": 1, "agents": 1, "torrent_count": 0, "torrents": []}
        assert {"inline", "cache", "totals"} <= set((await client.get(ports["agent"] + STATS)).json())
        # An error answered on one port is one of the daemon's, on every port; the latest are kept.
        for n in range(RECENT_ERRORS + 5):
            refused = await client.get(f"{ports['proxy']}/v2/Bad{n}/manifests/latest")
            assert refused.status_code == 400
        errors = (await client.get(ports["index"] + STATS, params={"status": "1"})).json()["status"]["errors"]
        assert len(errors) == RECENT_ERRORS
        assert errors[0]["where"] == f"GET /v2/Bad{RECENT_ERRORS + 4}/manifests/latest"
        assert errors[0]["status"] == 400 and errors[0]["message"].startswith("NAME_INVALID: ")
        assert (await client.get(ports["agent"] + STATS, params={"status": "1"})).json()["status"]["errors"] == []


async def _open_when_downloading(page: Page, url: str, client: httpx.AsyncClient, digest: str, **window: Any
                                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Open the status page and wait until it shows the download in progress: the download's
    /stats entry before, what the page shows, and the entry after."""
    before = await download_in(client, digest)
    await page.open(url, **window)
    shown = await page.wait_for(SHOWN_PROGRESS)
    after = await download_in(client, digest)
    return before, shown, after


@pytest.mark.timeout(240)
async def test_the_page_shows_a_download_in_progress(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd, agent, digest = await slow_download(nursery, tmp_path)
    async with (httpx.AsyncClient(base_url=agent.url("agent"), timeout=30) as client,
                chromium_page(tmp_path) as page):
        before, shown, after = await _open_when_downloading(page, agent.url("agent") + STATUS, client, digest,
                                                            width=1280, height=900)
        assert shown["digest"] == digest and shown["size"] == SLOW_SIZE == after["size"]
        assert before["done"] <= shown["done"] <= after["done"] < SLOW_SIZE
        assert 0 < shown["percent"] < 100 and shown["value"] == shown["done"] and shown["max"] == SLOW_SIZE
        assert f"of 32.0 MiB ({shown['percent']:.1f}%)" in shown["text"] and "/s" in shown["text"]
        text = await page.evaluate("document.body.innerText")
        assert "agent" in await page.evaluate("document.getElementById('roles').textContent")
        assert agent.ready["roles"]["agent"]["http"] in text and "Uptime" in text
        assert herd.ready["roles"]["origin"]["peer"] in await page.evaluate(
            "document.getElementById('peer-list').textContent"), "the origin it downloads from, with its rates"
        png = await page.screenshot(tmp_path / "status.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        assert page.problems() == []

        # The herd's page: its tracker's torrent, with the agent as its peer.
        [torrent] = [t for t in (await stats(client))["torrents"] if t["digest"] == digest]
        await page.open(herd.url("origin") + STATUS, width=1280, height=900)
        row = await page.wait_for(f"""[...document.querySelectorAll("#tracker-list tr")]
            .map((row) => row.textContent).find((text) => text.startsWith({json.dumps(torrent["info_hash"])}))""")
        assert row == f"{torrent['info_hash']}1"
        await page.screenshot(tmp_path / "herd-status.png")


@pytest.mark.timeout(240)
async def test_the_page_fits_a_phone(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd, agent, digest = await slow_download(nursery, tmp_path)
    async with (httpx.AsyncClient(base_url=agent.url("agent"), timeout=30) as client,
                chromium_page(tmp_path) as page):
        # A long error line too: a path without spaces must wrap, not widen the page.
        assert (await client.get(f"/namespace/{NS}/blobs/sha256:{'X' * 200}")).status_code == 400
        await _open_when_downloading(page, agent.url("agent") + STATUS, client, digest,
                                     width=375, height=667, mobile=True)
        await page.wait_for("document.getElementById('error-list').textContent.includes('XXXX')")
        width, viewport = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert viewport == 375 and width <= viewport
        png = await page.screenshot(tmp_path / "status-phone.png")
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        assert page.problems() == []


@pytest.mark.timeout(180)
async def test_hostile_text_shows_as_text(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    registry = agent.url("agent", "registry")
    async with httpx.AsyncClient(base_url=registry, timeout=30) as client:
        refused = await client.get(f"/v2/{HOSTILE}/manifests/{HOSTILE}")
        assert refused.status_code == 400
        [error] = (await stats(client))["status"]["errors"]
        assert HOSTILE in error["where"] and "<img src=x onerror=" in error["message"]
    async with chromium_page(tmp_path) as page:
        await page.open(registry + STATUS, width=1280, height=900)
        shown = await page.wait_for("""(() => {
            const where = document.querySelector("#error-list .where");
            return where && where.textContent; })()""")
        assert shown == f"GET /v2/{HOSTILE}/manifests/{HOSTILE}"
        # Shown as text: no element was made of it, and its handler never ran.
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        assert await page.evaluate("typeof window.pwned") == "undefined"
        await trio.sleep(1.5)  # a refresh later: still text
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.problems() == []
