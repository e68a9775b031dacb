"""GET /metrics on every port of real daemons: a push and a pull, counted by route and byte for byte."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from netsim.cluster import QUIET
from swarmreg.devcluster import DaemonProcess
from swarmreg.registry.wire import BLOB_ROUTE, MANIFEST_ROUTE
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_image

REPO = "team/metered"
ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str) -> Samples:
    """Every sample of ``url``'s /metrics: (name, labels) -> value."""
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def ports(herd: RunningDaemon | DaemonProcess, agent: RunningDaemon | DaemonProcess) -> dict[str, str]:
    """Every HTTP port of the two daemons, by port role; the tracker's is its websocket port."""
    return {"proxy": herd.url("proxy"), "origin": herd.url("origin"), "index": herd.url("index"),
            "tracker": herd.url("tracker", "ws"), "agent": agent.url("agent"),
            "agent-registry": agent.url("agent", "registry")}


async def start_pair(nursery: trio.Nursery, tmp_path: Path, *agent_overrides: str
                     ) -> tuple[RunningDaemon, RunningDaemon]:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}",
        *agent_overrides), ["agent"])
    return herd, agent


async def test_a_pull_is_counted_on_every_port(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd, agent = await start_pair(nursery, tmp_path)
    urls = ports(herd, agent)
    layer = random_bytes(3 << 20, seed=7)
    async with httpx.AsyncClient(timeout=60) as client:
        with trio.fail_after(60):
            async with httpx.AsyncClient(base_url=urls["proxy"], timeout=60) as proxy:
                _, manifest = await push_image(proxy, REPO, "v1", [layer])
            before = {role: await scrape(client, url) for role, url in urls.items()}
            response = await client.get(f"{urls['agent-registry']}/v2/{REPO}/manifests/v1")
            assert response.content == manifest
            pulled = await client.get(f"{urls['agent-registry']}/v2/{REPO}/blobs/{digest_of(layer)}")
            assert pulled.content == layer
            after = {role: await scrape(client, url) for role, url in urls.items()}

    def grew(role: str, name: str, **labels: str) -> float:
        return value(after[role], name, **labels) - value(before[role], name, **labels)

    # One daemon, one registry: the agent's two ports show the same numbers (but for the scrapes between).
    for role in urls:
        assert value(after[role], "swarmreg_process_resident_memory_bytes") > 0
        assert value(after[role], "swarmreg_process_open_fds") > 0
        assert value(after[role], "swarmreg_event_loop_lag_seconds") >= 0
        assert grew(role, "swarmreg_http_requests_total", route="/metrics", method="GET", status="200") >= 1, role
    # The registry client got the manifest and the layer, byte for byte, and nothing else.
    assert grew("agent", "swarmreg_bytes_sent_total", kind="registry_client") == len(manifest) + len(layer)
    # The port's own count has the scrapes of it too.
    assert grew("agent", "swarmreg_http_response_bytes_total", port_role="agent-registry") > len(manifest) + len(layer)
    blob = {"port_role": "agent-registry", "route": BLOB_ROUTE, "method": "GET"}
    assert grew("agent", "swarmreg_http_requests_total", status="200", **blob) == 1
    assert grew("agent", "swarmreg_http_request_duration_seconds_count", **blob) == 1
    assert grew("agent", "swarmreg_http_requests_total", port_role="agent-registry", route=MANIFEST_ROUTE,
                method="GET", status="200") == 1
    # The layer came over the peer wire from the origin (the only seeder), the manifest inline with
    # its metainfo from the tracker: byte for byte, as the herd counts what it sent.
    assert grew("agent", "swarmreg_bytes_received_total", kind="origin") == len(manifest) + len(layer)
    assert grew("agent", "swarmreg_bytes_received_total", kind="agent") == 0
    assert grew("origin", "swarmreg_bytes_sent_total", kind="agent") == len(manifest) + len(layer)
    assert grew("agent", "swarmreg_pieces_verified_total") >= 1
    assert value(after["agent"], "swarmreg_pieces_failed_total") == 0
    assert value(after["agent"], "swarmreg_torrents") >= 1
    assert value(after["agent"], "swarmreg_torrents_downloading") == 0
    assert grew("agent", "swarmreg_agent_cache_misses_total") >= 1
    # The push went through the proxy's upload routes; the origin held the session meanwhile.
    assert value(after["proxy"], "swarmreg_http_requests_total", port_role="proxy", method="PUT", status="201") >= 1
    assert value(after["proxy"], "swarmreg_http_request_bytes_total", port_role="proxy") >= len(layer)
    assert value(after["origin"], "swarmreg_origin_upload_sessions") == 0
    # The tracker saw the agent connect, announce and ask for metainfo.
    assert value(after["tracker"], "swarmreg_tracker_connections") >= 1
    assert value(after["tracker"], "swarmreg_tracker_announces_total") >= 1
    assert value(after["tracker"], "swarmreg_tracker_metainfo_requests_total") >= 1
    # No raw path in a label: repositories and digests never become series.
    for samples in after.values():
        for _, labels in samples:
            assert not any(REPO in label or "sha256:" in label for _, label in labels), labels


async def test_scrapes_during_a_pull_by_daemon_processes(spawn: Any) -> None:
    """As an operator's Prometheus sees a devcluster: every port scraped while a blob moves, the
    counters never going down, and in the end what moved, byte for byte."""
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], *QUIET)
    agent = await spawn("agent", ["agent"], *QUIET, f"agent.tracker={herd.address('tracker', 'ws')}",
                        f"agent.index={herd.address('index')}")
    urls = ports(herd, agent)
    layer = random_bytes(24 << 20, seed=9)
    counted = ("swarmreg_bytes_sent_total", "swarmreg_bytes_received_total", "swarmreg_http_requests_total",
               "swarmreg_pieces_verified_total", "swarmreg_tracker_announces_total")
    async with httpx.AsyncClient(timeout=60) as client:
        with trio.fail_after(120):
            async with httpx.AsyncClient(base_url=urls["proxy"], timeout=60) as proxy:
                _, manifest = await push_image(proxy, REPO, "v1", [layer])
            before = {role: await scrape(client, url) for role, url in urls.items()}
            last = dict(before)
            scrapes = 0
            pulled = trio.Event()

            async def pull() -> None:
                response = await client.get(f"{urls['agent-registry']}/v2/{REPO}/blobs/{digest_of(layer)}")
                assert response.content == layer
                pulled.set()

            async with trio.open_nursery() as pulling:
                pulling.start_soon(pull)
                while not pulled.is_set() or scrapes < 2:
                    for role, url in urls.items():
                        now = await scrape(client, url)
                        for key, number in now.items():
                            if key[0] in counted and key in last[role]:
                                assert number >= last[role][key], (role, key)
                        last[role] = now
                    scrapes += 1
            after = {role: await scrape(client, url) for role, url in urls.items()}

    def grew(role: str, name: str, **labels: str) -> float:
        return value(after[role], name, **labels) - value(before[role], name, **labels)

    assert grew("agent-registry", "swarmreg_bytes_sent_total", kind="registry_client") == len(layer)
    assert grew("agent", "swarmreg_bytes_received_total", kind="origin") == len(layer)
    assert grew("origin", "swarmreg_bytes_sent_total", kind="agent") == len(layer)
    assert grew("proxy", "swarmreg_bytes_received_total", kind="registry_client") == 0  # pushed before
    assert value(after["proxy"], "swarmreg_bytes_received_total", kind="registry_client") >= len(layer) + len(
        manifest)


async def test_hostile_requests_to_metrics(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd, agent = await start_pair(nursery, tmp_path)
    urls = ports(herd, agent)
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(60):
            for role, url in urls.items():
                for query in ("?x=%00%ff&&==&name[]=1", "?" + "a" * 4000, "?format=json"):
                    response = await client.get(f"{url}/metrics{query}")
                    assert response.status_code == 200 and "swarmreg_http_requests_total" in response.text, role
                head = await client.head(f"{url}/metrics")
                assert head.status_code == 200 and head.content == b"", role
                for method in ("POST", "PUT", "DELETE"):
                    refused = await client.request(method, f"{url}/metrics", content=b"x" * 100)
                    assert refused.status_code == 405, (role, method)
                    assert refused.json()["errors"][0]["code"] == "UNSUPPORTED"
                # Paths nobody routes: one "unmatched" series however many there are.
                for n in range(5):
                    missing = await client.get(f"{url}/nothing-here/{n}")
                    assert missing.status_code == 404 and missing.json()["errors"][0]["code"], role
                samples = await scrape(client, url)
                assert value(samples, "swarmreg_http_requests_total", port_role=role, route="unmatched",
                             status="404") == 5, role
                assert not any("nothing-here" in label for _, labels in samples for _, label in labels)
            # A client that hangs up mid-body is no server error: 499, not 500.
            started = await client.post(f"{urls['proxy']}/v2/{REPO}/blobs/uploads/")
            assert started.status_code == 202, started.text
            host, port = herd.ready["roles"]["proxy"]["http"].rsplit(":", 1)
            quitter = trio.socket.socket()
            await quitter.connect((host, int(port)))
            await quitter.send(f"PATCH {started.headers['location']} HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: 100000\r\n\r\npart of it".encode())
            await trio.sleep(0.2)
            quitter.close()
            while not value(await scrape(client, urls["proxy"]), "swarmreg_http_requests_total",
                            method="PATCH", status="499"):
                await trio.sleep(0.05)
            # The tracker's port still serves the announce channel: the agent pulls through it.
            tracker = trio.socket.socket()
            host, port = herd.ready["roles"]["tracker"]["ws"].rsplit(":", 1)
            await tracker.connect((host, int(port)))
            await tracker.send(b"NOT HTTP AT ALL\r\n\r\n")
            assert b" 400 " in await tracker.recv(1000)
            tracker.close()
            async with httpx.AsyncClient(base_url=urls["proxy"], timeout=60) as proxy:
                await push_image(proxy, REPO, "v1", [random_bytes(300_000, seed=3)])
            assert (await client.get(f"{urls['agent-registry']}/v2/{REPO}/manifests/v1")).status_code == 200


async def test_the_dashboard_and_the_docs_name_what_is_exported(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Every expression of deploy/grafana/swarmreg.json names only series a daemon exports, and
    docs/metrics.md lists every family exported."""
    herd, agent = await start_pair(nursery, tmp_path)
    exported: set[str] = set()
    families: set[str] = set()
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(30):
            for url in ports(herd, agent).values():
                text = (await client.get(f"{url}/metrics")).text
                for family in text_string_to_metric_families(text):
                    families.add(family.name)
                    exported |= {family.name, *(sample.name for sample in family.samples)}
                    if family.type == "counter":
                        exported.add(family.name + "_total")
                    if family.type == "histogram":
                        exported |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    dashboard: dict[str, Any] = json.loads((ROOT / "deploy/grafana/swarmreg.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["query"] for variable in dashboard.get("templating", {}).get("list", [])
              if variable.get("type") == "query"]
    assert len(exprs) >= 8
    for expr in exprs:
        named = set(re.findall(r"\bswarmreg_[a-z0-9_]+", expr))
        assert named, expr
        assert named <= exported, (expr, named - exported)
    documented = set(re.findall(r"`(swarmreg_[a-z0-9_]+)", (ROOT / "docs/metrics.md").read_text()))
    undocumented = {name for name in families if name not in documented and name + "_total" not in documented}
    assert not undocumented, undocumented


async def test_a_pull_cut_short_counts_no_more_than_went_out(nursery: trio.Nursery, tmp_path: Path) -> None:
    # hypercorn's send returns even when the socket broke during it: the middleware counted the
    # whole body message (a 4 MiB piece) as sent to a client that had read 200 KB and gone.
    # Body messages of 16 MiB: more than the kernel's socket buffers hold (tcp_wmem's maximum is
    # 4 MiB), so the send of the first one is still under way when the client resets; under load
    # a 4 MiB message could be taken whole by the buffers before the reset, and count rightly.
    herd, agent = await start_pair(nursery, tmp_path, "store.chunk_size=16MiB")
    urls = ports(herd, agent)
    layer = random_bytes(24 << 20, seed=11)
    blob = {"port_role": "agent-registry", "route": BLOB_ROUTE, "method": "GET"}
    async with httpx.AsyncClient(timeout=60) as client:
        with trio.fail_after(60):
            async with httpx.AsyncClient(base_url=urls["proxy"], timeout=60) as proxy:
                await push_image(proxy, REPO, "v1", [layer])
            path = f"/v2/{REPO}/blobs/{digest_of(layer)}"
            assert (await client.get(f"{urls['agent-registry']}{path}")).content == layer  # now held
            before = await scrape(client, urls["agent-registry"])
            host, port = agent.ready["roles"]["agent"]["registry"].rsplit(":", 1)
            quitter = trio.socket.socket()
            quitter.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 32 << 10)
            await quitter.connect((host, int(port)))
            await quitter.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = 0
            while got < 200_000:
                got += len(await quitter.recv(65536))
            # An abortive close (RST): the server's next write fails rather than filling a buffer.
            quitter.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
            quitter.close()
            while True:
                after = await scrape(client, urls["agent-registry"])
                if value(after, "swarmreg_http_request_duration_seconds_count", **blob) > value(
                        before, "swarmreg_http_request_duration_seconds_count", **blob):
                    break
                await trio.sleep(0.05)
    counted = value(after, "swarmreg_bytes_sent_total", kind="registry_client") - value(
        before, "swarmreg_bytes_sent_total", kind="registry_client")
    assert counted <= got, (counted, got)
