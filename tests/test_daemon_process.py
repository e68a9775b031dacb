"""The daemon as a real child process: readiness, logs, start-up errors, crashes and shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import blob_files, random_bytes
from tests.origin.helpers import RawRequest, blob_path, commit, digest_of, patch, start_upload, upload_blob

NS = "library/crash"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmreg", *args], capture_output=True, text=True,
                          timeout=timeout)


async def test_ready_file_names_every_bound_address(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"])
    ready = json.loads(daemon.ready_file.read_text())
    assert ready["pid"] == daemon.process.pid
    host, _, port = ready["roles"]["origin"]["http"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://{ready['roles']['origin']['http']}/health")).status_code == 200
    assert await daemon.stop() == 0
    assert not daemon.ready_file.exists()


async def test_json_logs(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"], "log.format=json")
    async with httpx.AsyncClient(base_url=daemon.url("origin")) as client:
        await client.get("/health")
    await daemon.stop()
    lines = (tmp_path / "origin.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "swarmreg.daemon" and r["message"].startswith("ready") for r in records)


@pytest.mark.parametrize(("args", "message"), [
    (["--roles", "origin", "--set", "origin.lissten=1"], "origin.lissten: unknown key"),
    (["--roles", "origin", "--set", "store.chunk_size=12"], "chunk_size"),
    (["--roles", "origin", "--set", "log.level=\"loud\""], "log.level"),
    (["--roles", "origin", "--config", "/nonexistent.toml"], "cannot read configuration"),
    (["--roles", "origin,origin"], "listed twice"),
    (["--roles", "seeder"], "unknown role 'seeder'"),
    # Nothing listens on port 1: the index's database is out of reach, said without its password.
    (["--roles", "index", "--set", "index.listen=127.0.0.1:0",
      "--set", "index.database=postgresql://u:pg-secret-pw@127.0.0.1:1/x"], "index database is unavailable"),
])
def test_bad_start_up_is_refused_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("daemon", "--data-dir", str(tmp_path / "d"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "pg-secret-pw" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_invalid_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[origin\nlisten = 1")
    result = run_cli("daemon", "--roles", "origin", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "not valid TOML" in result.stderr


async def test_port_in_use_is_a_clear_error(spawn, tmp_path: Path) -> None:
    first = await spawn("first", ["origin"])
    result = await trio.to_thread.run_sync(lambda: run_cli(
        "daemon", "--roles", "origin", "--data-dir", str(tmp_path / "second"),
        "--set", f"origin.listen={first.address('origin')}"))
    assert result.returncode == 2
    assert "address already in use" in result.stderr.lower()


async def test_one_data_dir_one_daemon(spawn, tmp_path: Path) -> None:
    await spawn("first", ["origin"], data_dir=tmp_path / "shared")
    second = await spawn("second", ["origin"], data_dir=tmp_path / "shared", wait=False)
    assert await second.wait() == 2
    assert "in use by another daemon" in (tmp_path / "second.log").read_text()


async def test_sigkill_mid_upload_leaves_no_partial_blob_and_the_upload_resumes(spawn, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    daemon = await spawn("origin", ["origin"], data_dir=data_dir)
    data = random_bytes(12 << 20)
    digest = digest_of(data)
    half = len(data) // 2
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=60) as client:
        stored = await upload_blob(client, "library/other", random_bytes(4 << 20, seed=9))
        uid = await start_upload(client, NS, digest)
        assert (await patch(client, NS, digest, uid, data[:half], 0)).status_code == 200
        raw = await RawRequest.open(daemon.address("origin"), "PATCH", f"{blob_path(NS, digest)}/uploads/{uid}",
                                    {"Content-Range": f"{half},{len(data)}", "Content-Length": str(len(data) - half)})
        await raw.send(data[half:half + (3 << 20)])
        await trio.sleep(0.3)  # the daemon is now writing that chunk
        daemon.kill()
        assert await daemon.wait() == -signal.SIGKILL
        await raw.aclose()

    assert blob_files(data_dir) == {stored.removeprefix("sha256:"): 4 << 20}, "store intact, nothing partial"

    daemon = await spawn("origin-again", ["origin"], data_dir=data_dir)
    assert list((data_dir / "tmp").iterdir()) == []
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=60) as client:
        assert (await client.get(blob_path(NS, digest))).status_code == 404
        assert (await client.get(blob_path("library/other", stored))).content == random_bytes(4 << 20, seed=9)
        # The first half survived the crash; the interrupted chunk was never recorded.
        assert (await patch(client, NS, digest, uid, data[half:], half)).status_code == 200
        assert (await commit(client, NS, digest, uid)).status_code == 200
        assert (await client.get(blob_path(NS, digest))).content == data
        # And a brand new upload starts as usual.
        await upload_blob(client, NS, b"after the crash")
    assert await daemon.stop() == 0


async def test_graceful_shutdown_lets_an_in_flight_chunk_finish(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"])
    data = random_bytes(2 << 20)
    digest = digest_of(data)
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=60) as client:
        uid = await start_upload(client, NS, digest)
    raw = await RawRequest.open(daemon.address("origin"), "PATCH", f"{blob_path(NS, digest)}/uploads/{uid}",
                                {"Content-Range": f"0,{len(data)}", "Content-Length": str(len(data))})
    await raw.send(data[:1 << 20])
    await trio.sleep(0.2)
    daemon.send_signal(signal.SIGTERM)
    await trio.sleep(0.3)
    # New connections are refused while the in-flight request may still finish.
    host, _, port = daemon.address("origin").rpartition(":")
    with pytest.raises(OSError):
        await trio.open_tcp_stream(host, int(port))
    await raw.send(data[1 << 20:])
    status, _ = await raw.response()
    assert status == 200
    assert await daemon.wait() == 0
    # The chunk was recorded before the daemon stopped: a restart commits it.
    again = await spawn("origin-again", ["origin"], data_dir=daemon.data_dir)
    async with httpx.AsyncClient(base_url=again.url("origin"), timeout=60) as client:
        assert (await commit(client, NS, digest, uid)).status_code == 200
        assert (await client.get(blob_path(NS, digest))).content == data


async def test_shutdown_deadline_cuts_a_stalled_upload(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"], "shutdown_timeout=1")
    data = random_bytes(100_000)
    digest = digest_of(data)
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=60) as client:
        uid = await start_upload(client, NS, digest)
    raw = await RawRequest.open(daemon.address("origin"), "PATCH", f"{blob_path(NS, digest)}/uploads/{uid}",
                                {"Content-Range": f"0,{len(data)}", "Content-Length": str(len(data))})
    await raw.send(data[:1000])
    await trio.sleep(0.2)
    daemon.send_signal(signal.SIGTERM)
    with trio.fail_after(20):  # the deadline is 1 s; the bound here only stops a hung test
        assert await daemon.wait() == 0
    await raw.aclose()
    again = await spawn("origin-again", ["origin"], data_dir=daemon.data_dir)
    async with httpx.AsyncClient(base_url=again.url("origin"), timeout=60) as client:
        # The cut chunk was discarded whole: sending it again is accepted.
        assert (await patch(client, NS, digest, uid, data, 0)).status_code == 200
        assert (await commit(client, NS, digest, uid)).status_code == 200


async def test_commit_in_flight_at_shutdown_completes(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"])
    data = random_bytes(64 << 20)
    digest = digest_of(data)
    async with httpx.AsyncClient(base_url=daemon.url("origin"), timeout=60) as client:
        uid = await start_upload(client, NS, digest)
        # Out of order, so the commit has to hash the whole file: it takes a while.
        piece = 8 << 20
        for start in reversed(range(0, len(data), piece)):
            assert (await patch(client, NS, digest, uid, data[start:start + piece], start)).status_code == 200
        async with trio.open_nursery() as nursery:
            results = []

            async def put() -> None:
                results.append(await commit(client, NS, digest, uid))

            nursery.start_soon(put)
            await trio.sleep(0.05)
            daemon.send_signal(signal.SIGTERM)
    assert results[0].status_code == 200
    assert await daemon.wait() == 0
    assert blob_files(daemon.data_dir) == {digest.removeprefix("sha256:"): len(data)}
    assert list((daemon.data_dir / "uploads").iterdir()) == []


async def test_second_signal_stops_at_once(spawn, tmp_path: Path) -> None:
    daemon = await spawn("origin", ["origin"], "shutdown_timeout=600")
    data = random_bytes(10_000)
    digest = digest_of(data)
    async with httpx.AsyncClient(base_url=daemon.url("origin")) as client:
        uid = await start_upload(client, NS, digest)
    raw = await RawRequest.open(daemon.address("origin"), "PATCH", f"{blob_path(NS, digest)}/uploads/{uid}",
                                {"Content-Range": "0,10000", "Content-Length": "10000"})
    await raw.send(data[:10])
    await trio.sleep(0.2)
    daemon.send_signal(signal.SIGTERM)
    await trio.sleep(0.3)
    daemon.send_signal(signal.SIGINT)
    with trio.fail_after(20):  # far below the 600 s the first signal allowed
        assert await daemon.wait() == 0
    await raw.aclose()
