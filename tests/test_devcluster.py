"""`swarmreg devcluster` and the shipped configuration files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import trio

from swarmreg.config import Config, load_config
from tests.origin.helpers import upload_blob
from tests.proxy.helpers import push_image

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_shows_the_defaults(tmp_path: Path) -> None:
    """configs/example.toml documents every default: loading it changes nothing."""
    loaded = load_config(ROOT / "configs/example.toml", data_dir=str(tmp_path))
    assert loaded == attrs.evolve(Config(), data_dir=str(tmp_path))


async def test_devcluster_starts_on_the_seed_ports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "swarmreg", "devcluster", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        output = b""
        with trio.fail_after(60):
            while b"Ctrl-C stops it" not in output or b"17001" not in output:
                data = await process.stdout.receive_some()
                assert data, f"devcluster exited: {output.decode()}"
                output += data
        for endpoint in (b"http://127.0.0.1:15000", b"http://127.0.0.1:15002", b"ws://127.0.0.1:15003",
                         b"http://127.0.0.1:15004", b"http://127.0.0.1:16000", b"http://127.0.0.1:16002",
                         b"http://127.0.0.1:17000", b"http://127.0.0.1:17002", b"tcp://127.0.0.1:16001",
                         b"tcp://127.0.0.1:17001"):
            assert endpoint in output
        async with httpx.AsyncClient(timeout=60) as client:
            assert (await client.get("http://127.0.0.1:15002/health")).status_code == 200
            data = b"hello devcluster" * 100_000
            origin = httpx.AsyncClient(base_url="http://127.0.0.1:15002", timeout=60)
            digest = await upload_blob(origin, "library/dev", data, through=True)
            await origin.aclose()
            for agent in ("http://127.0.0.1:16002", "http://127.0.0.1:17002"):
                response = await client.get(f"{agent}/namespace/library%2Fdev/blobs/{digest}")
                assert response.content == data
            # The walk-through of seed 002: push to the proxy, pull from both agents' registries.
            proxy = httpx.AsyncClient(base_url="http://127.0.0.1:15000", timeout=60)
            manifest_digest, manifest = await push_image(proxy, "test/hello-world", "latest", [data])
            await proxy.aclose()
            for registry in ("http://127.0.0.1:16000", "http://127.0.0.1:17000"):
                pulled = await client.get(f"{registry}/v2/test/hello-world/manifests/latest")
                assert pulled.content == manifest
                layer = await client.get(f"{registry}/v2/test/hello-world/blobs/{digest}")
                assert layer.content == data
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert (tmp_path / "herd" / "backend").is_dir(), "data stays under --data-dir"
        assert (tmp_path / "agent-two" / "blobs").is_dir()
    finally:
        process.kill()
        await process.wait()
