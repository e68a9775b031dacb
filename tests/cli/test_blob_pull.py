"""``swarmreg blob pull``: verified while it streams, nothing half-written under the final name, and
resumable with Range: after an agent that died mid-pull, after a full disk. Hostile agents (wrong
bytes, a wrong Content-Range, more bytes than the blob) get one clear line."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.cli.helpers import (
    NS,
    SWARMREG,
    Relay,
    cli_env,
    one_line_error,
    serve_script,
    start_agent,
    start_herd,
    swarmreg,
)
from tests.conftest import free_port, random_bytes
from tests.origin.helpers import tmpfs, upload_blob

MiB = 1 << 20


async def upload(herd: Any, data: bytes) -> str:
    async with httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as client:
        return await upload_blob(client, NS, data, chunk=8 * MiB)


async def test_a_pull_resumes_after_the_agent_died(nursery: trio.Nursery, tmp_path: Path, spawn: Any) -> None:
    herd = await start_herd(nursery, tmp_path, "swarm.upload_rate_limit=4MiB")  # 16 MiB take 4 s to the agent
    data = random_bytes(16 * MiB, seed=5)
    digest = await upload(herd, data)
    port = free_port()
    agent_settings = (f"agent.tracker={herd.ready['roles']['tracker']['ws']}", f"agent.listen=127.0.0.1:{port}")
    agent = await spawn("agent", ["agent"], *agent_settings)
    relay = Relay(f"127.0.0.1:{port}")  # outlives the agent: the command stays the same
    await nursery.start(relay.run)
    target = tmp_path / "out" / "layer.bin"
    target.parent.mkdir()
    part = target.with_name("layer.bin.part")
    command = ["blob", "pull", digest, "--agent", f"http://{relay.address}", "--namespace", NS, "-o", str(target)]

    pull = await trio.lowlevel.open_process([*SWARMREG, *command], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, env=cli_env(tmp_path))
    with trio.fail_after(30):
        while not part.exists() or part.stat().st_size < 2 * MiB:
            await trio.sleep(0.02)
    agent.kill()
    await agent.wait()
    assert await pull.wait() == 1
    assert pull.stderr is not None
    stderr = (await pull.stderr.receive_some(65536)).decode()
    assert "the agent stopped sending after" in stderr and "Traceback" not in stderr, stderr
    kept = part.stat().st_size
    assert 2 * MiB <= kept < len(data) and not target.exists()
    assert part.read_bytes() == data[:kept], "what the part holds is the blob's start"

    await spawn("agent-again", ["agent"], *agent_settings, data_dir=tmp_path / "agent")
    relay.received = 0
    resumed = await swarmreg(tmp_path, *command)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"resuming {part} at" in resumed.stderr.decode()
    assert target.read_bytes() == data and not part.exists()
    assert relay.received < len(data) - kept + (64 << 10), (relay.received, kept)


async def test_a_full_disk_at_the_target_then_a_resume(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(8 * MiB, seed=6)
    digest = await upload(herd, data)
    with tmpfs(tmp_path / "small", "3M") as disk:
        target = disk / "layer.bin"
        command = ["blob", "pull", digest, "--agent", agent.url("agent"), "--namespace", NS, "-o", str(target)]
        full = await swarmreg(tmp_path, *command)
        assert "no space left writing" in one_line_error(full, 1)
        part = disk / "layer.bin.part"
        assert not target.exists() and 0 < part.stat().st_size <= 3 * MiB
        assert part.read_bytes() == data[:part.stat().st_size]
        subprocess.run(["mount", "-o", "remount,size=16M", str(disk)], check=True)
        resumed = await swarmreg(tmp_path, *command)
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert target.read_bytes() == data and not part.exists()


def _answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}Connection: close\r\n\r\n".encode() + body


async def test_hostile_agents(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = random_bytes(300_000, seed=7)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    mode: dict[str, str] = {}
    ranges: list[str | None] = []

    def agent(method: str, path: str, headers: dict[str, str]) -> bytes:
        asked = headers.get("range")
        ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        whole = {"Content-Length": str(len(data))}
        if mode["how"] == "wrong bytes":
            return _answer("200 OK", whole, bytes(len(data)))
        if mode["how"] == "wrong range":
            return _answer("206 Partial Content", {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}, data)
        if mode["how"] == "too much":  # no Content-Length: the body runs until the connection closes
            return _answer("206 Partial Content", {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                           data[start:] + b"extra")
        if mode["how"] == "ignores ranges":
            return _answer("200 OK", whole, data)
        if mode["how"] == "short":
            return _answer("200 OK", whole, data[:1000])
        if mode["how"] == "unknown":
            body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}'
            return _answer("404 Not Found", {"Content-Length": str(len(body)), "Content-Type": "application/json"},
                           body)
        if start >= len(data):
            return _answer("416 Range Not Satisfiable", {"Content-Range": f"bytes */{len(data)}",
                                                         "Content-Length": "0"}, b"")
        return _answer("206 Partial Content" if asked else "200 OK",
                       {"Content-Length": str(len(data) - start),
                        **({"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if asked else {})},
                       data[start:])

    address = await nursery.start(serve_script, agent)
    target = tmp_path / "blob.bin"
    part = tmp_path / "blob.bin.part"

    async def pull(how: str) -> subprocess.CompletedProcess[bytes]:
        mode["how"] = how
        return await swarmreg(tmp_path, "blob", "pull", digest, "--agent", f"http://{address}", "-o", str(target))

    assert "digest mismatch" in one_line_error(await pull("wrong bytes"), 1)
    assert not target.exists() and not part.exists(), "bytes that do not match are removed"
    assert "has no blob" in one_line_error(await pull("unknown"), 1)
    assert not part.exists(), "an empty part does not stay"
    assert "stopped sending after" in one_line_error(await pull("short"), 1)
    assert part.read_bytes() == data[:1000] and not target.exists()

    assert "a range other than the one asked for" in one_line_error(await pull("wrong range"), 1)
    assert part.read_bytes() == data[:1000], "the part is left as it was"
    assert ranges[-1] == "bytes=1000-"

    assert "more bytes than the blob's 300000" in one_line_error(await pull("too much"), 1)
    assert part.read_bytes() == data and not target.exists(), "the blob's bytes only, and not under its name"
    done = await pull("honest")
    assert done.returncode == 0, done.stderr.decode()
    assert ranges[-1] == f"bytes={len(data)}-", "the whole blob was in the part: 416, verified, renamed"
    assert target.read_bytes() == data and not part.exists()

    target.unlink()
    part.write_bytes(b"not the blob at all")
    done = await pull("ignores ranges")
    assert done.returncode == 0, done.stderr.decode()
    assert target.read_bytes() == data and not part.exists(), "a whole answer replaces the part"


async def test_careless_pulls_get_one_line(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    url = agent.url("agent")
    missing = "sha256:" + "ab" * 32
    cases = [
        (["blob", "pull", "sha256:abc", "--agent", url], 2, "is not a digest"),
        (["blob", "pull", "latest", "--agent", url], 2, "is not a digest"),
        (["blob", "pull", missing, "--agent", url, "-o", str(tmp_path / "x")], 1, "has no blob"),
        (["blob", "pull", missing, "--agent", "http://127.0.0.1:1", "-o", str(tmp_path / "x")], 1, "cannot reach"),
        (["blob", "pull", missing, "--agent", url, "-o", str(tmp_path)], 2, "is a directory"),
        (["blob", "pull", missing, "--agent", url, "-o", str(tmp_path / "no" / "x")], 2, "cannot write"),
        (["blob", "pull", missing, "--agent", "https://127.0.0.1:1"], 2, "plain HTTP"),
        (["blob", "pull", missing, "--agent", url, "--namespace", "a//b"], 2, "is not a namespace"),
    ]
    for args, status, message in cases:
        assert message in one_line_error(await swarmreg(tmp_path, *args), status), args
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x")) == []


async def test_a_closed_pipe_and_a_part_another_pull_writes(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(4 * MiB, seed=11)
    digest = await upload(herd, data)
    pull = ["blob", "pull", digest, "--agent", agent.url("agent"), "--namespace", NS]
    shell = " ".join([*SWARMREG, *pull]) + " | head -c 10 > /dev/null"
    done = await trio.run_process(["bash", "-c", f"set -o pipefail; {shell}"], capture_stderr=True, check=False,
                                  env=cli_env(tmp_path))
    assert done.returncode == 1 and b"standard output was closed after" in done.stderr, done.stderr

    target = tmp_path / "layer.bin"
    part = tmp_path / "layer.bin.part"
    with part.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert "another pull is writing" in one_line_error(await swarmreg(tmp_path, *pull, "-o", str(target)), 1)
    assert not target.exists()
