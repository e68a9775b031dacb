"""`swarmreg devcluster` and the shipped configuration files."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from swarmreg.config import Address, Config, load_config
from swarmreg.devcluster import DEVCLUSTER, NodeSpec, upstream_overrides, upstream_registry
from tests.origin.helpers import upload_blob
from tests.proxy.helpers import push_image

ROOT = Path(__file__).resolve().parents[1]


def devcluster_ports(specs: Sequence[NodeSpec] = DEVCLUSTER) -> list[int]:
    """The fixed ports a devcluster listens on, from its node specs (``*.listen=host:port``)."""
    return [Address.parse(value).port for spec in specs for override in spec.overrides
            for key, value in [override.split("=", 1)] if key.endswith("listen")]


def busy_port(ports: list[int]) -> int | None:
    """The first of ``ports`` that cannot be bound on 127.0.0.1 now (as the daemons bind), if any."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return port
    return None


def test_example_config_shows_the_defaults(tmp_path: Path) -> None:
    """configs/example.toml documents every default: loading it changes nothing."""
    loaded = load_config(ROOT / "configs/example.toml", data_dir=str(tmp_path))
    assert loaded == attrs.evolve(Config(), data_dir=str(tmp_path))


async def endpoint_table(process: trio.Process, last: bytes, timeout: float) -> str:
    """The devcluster's output up to its endpoint table's end (``last`` printed, after "is up")."""
    assert process.stdout is not None
    output = b""
    with trio.fail_after(timeout):
        while b"Ctrl-C stops it" not in output or last not in output.partition(b"Ctrl-C stops it")[2]:
            data = await process.stdout.receive_some()
            assert data, f"the devcluster exited: {output.decode()}"
            output += data
    return output.decode()


@pytest.fixture
def devcluster_ports_free() -> None:
    """Skip (naming the port) when a devcluster port is taken: its ports are fixed, and are what
    the test checks, so it cannot run beside a running devcluster. (A sync fixture: pytest-trio
    would drop the reason of a skip raised in the test.)"""
    if (port := busy_port(devcluster_ports())) is not None:
        pytest.skip(f"devcluster port 127.0.0.1:{port} is in use (a devcluster running?)")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_devcluster_starts_on_krakens_ports_and_stops_on_ctrl_c(tmp_path: Path, tls: bool,
                                                                    devcluster_ports_free: None) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "swarmreg", "devcluster", "--data-dir", str(tmp_path), *(["--tls"] if tls else [])],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    secure, ws = ("https", "wss") if tls else ("http", "ws")
    try:
        output = (await endpoint_table(process, b"17001", 60)).encode()
        for endpoint in ("http://127.0.0.1:15000", f"{secure}://127.0.0.1:15002", f"{ws}://127.0.0.1:15003",
                         f"{secure}://127.0.0.1:15004", "http://127.0.0.1:16000", "http://127.0.0.1:16002",
                         "http://127.0.0.1:17000", "http://127.0.0.1:17002", "tcp://127.0.0.1:16001",
                         "tcp://127.0.0.1:17001"):
            assert endpoint.encode() in output
        # With --tls the origin takes only clients with a certificate from the devcluster's CA.
        verify: ssl.SSLContext | bool = True
        if tls:
            verify = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
            verify.load_cert_chain(tmp_path / "certs" / "herd.pem", tmp_path / "certs" / "herd.key")
        async with httpx.AsyncClient(timeout=60) as client:
            data = b"hello devcluster" * 100_000
            origin = httpx.AsyncClient(base_url=f"{secure}://127.0.0.1:15002", timeout=60, verify=verify)
            assert (await origin.get("/health")).status_code == 200
            digest = await upload_blob(origin, "library/dev", data, through=True)
            await origin.aclose()
            for agent in ("http://127.0.0.1:16002", "http://127.0.0.1:17002"):
                response = await client.get(f"{agent}/namespace/library%2Fdev/blobs/{digest}")
                assert response.content == data
            # Kraken's devcluster codelab: push to the proxy, pull from both agents' registries.
            proxy = httpx.AsyncClient(base_url="http://127.0.0.1:15000", timeout=60)
            manifest_digest, manifest = await push_image(proxy, "test/hello-world", "latest", [data])
            for registry in ("http://127.0.0.1:16000", "http://127.0.0.1:17000"):
                pulled = await client.get(f"{registry}/v2/test/hello-world/manifests/latest")
                assert pulled.content == manifest
                layer = await client.get(f"{registry}/v2/test/hello-world/blobs/{digest}")
                assert layer.content == data
            # The admin API is open on the devcluster's loopback proxy, as pushes and deletes are.
            listed = await proxy.get("/cmd/image/list", headers={"Accept": "application/json"})
            assert listed.status_code == 200 and manifest_digest in listed.text, listed.text
            collected = await proxy.post("/cmd/gc", params={"dryRun": "true"}, headers={"Accept": "application/json"})
            assert collected.status_code == 200 and collected.json()["dry_run"] is True, collected.text
            await proxy.aclose()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert (tmp_path / "herd" / "backend").is_dir(), "data stays under --data-dir"
        assert (tmp_path / "agent-two" / "blobs").is_dir()
    finally:
        process.kill()
        await process.wait()


def test_upstream_urls_become_registries_entries():
    assert upstream_registry("http://127.0.0.1:5000") == {"name": "127.0.0.1:5000", "scheme": "http"}
    assert upstream_registry("https://Registry.Example.com/") == {"name": "registry.example.com", "scheme": "https"}
    config = load_config(None, list(upstream_overrides(["http://127.0.0.1:5000", "https://r.example.com:8443"])))
    assert [(r.name, r.scheme) for r in config.registries] == [("127.0.0.1:5000", "http"),
                                                                ("r.example.com:8443", "https")]
    assert config.default_registry == "127.0.0.1:5000"  # the first one serves bare names
    assert upstream_overrides([]) == ()


@pytest.mark.parametrize("url", ["ftp://x", "http://x/path", "127.0.0.1:5000", "http://u:p@x", "http://x?q=1", ""])
def test_a_malformed_upstream_url_is_refused(url: str):
    with pytest.raises(ValueError, match="--upstream"):
        upstream_registry(url)


def test_devcluster_refuses_a_malformed_upstream_before_starting(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "swarmreg", "devcluster", "--data-dir", str(tmp_path),
                           "--upstream", "ftp://x"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--upstream 'ftp://x'" in done.stderr
    assert not (tmp_path / "herd").exists()
