"""``swarmreg blob push``: an interrupted push resumes from the origin's offset, a second push of
the same blob to the same origin is refused while one runs, and careless or hostile input
(a directory, a file that changes, an origin that lies about its session) gets one clear line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import attrs
import httpx
import trio

from swarmreg.origin.wire import UPLOAD_SIZE
from tests.cli.helpers import NS, SWARMREG, Relay, cli_env, one_line_error, serve_script, start_herd, swarmreg
from tests.conftest import RunningDaemon, blob_files, random_bytes
from tests.origin.helpers import blob_path

MiB = 1 << 20


def records(tmp_path: Path) -> list[dict[str, object]]:
    pushes = tmp_path / "state" / "swarmreg" / "pushes"
    found = []
    for path in pushes.glob("*.json") if pushes.exists() else ():
        text = path.read_text()
        if text:
            found.append(json.loads(text))
    return found


async def upload_offset(origin: str, digest: str, uid: str) -> int:
    async with httpx.AsyncClient(base_url=origin, timeout=10) as client:
        response = await client.get(f"{blob_path(NS, digest)}/uploads/{uid}")
    assert response.status_code == 204, response.text
    return int(response.headers[UPLOAD_SIZE])


@attrs.frozen
class SlowPush:
    """A file of ``data`` to push, in 1 MiB chunks, to an origin behind a relay at 4 MiB/s."""

    herd: RunningDaemon
    relay: Relay
    data: bytes
    digest: str
    command: list[str]

    async def start(self, tmp_path: Path, stderr: int = subprocess.DEVNULL) -> trio.Process:
        return await trio.lowlevel.open_process([*SWARMREG, *self.command], stdout=subprocess.DEVNULL,
                                                stderr=stderr, env=cli_env(tmp_path))


async def slow_push(nursery: trio.Nursery, tmp_path: Path, size: int, seed: int) -> SlowPush:
    herd = await start_herd(nursery, tmp_path)
    relay = Relay(herd.url("origin").removeprefix("http://"), rate=4 * MiB)
    await nursery.start(relay.run)
    data = random_bytes(size, seed=seed)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    command = ["blob", "push", str(source), "--origin", f"http://{relay.address}", "--namespace", NS,
               "--chunk-size", "1MiB"]
    return SlowPush(herd, relay, data, "sha256:" + hashlib.sha256(data).hexdigest(), command)


async def test_an_interrupted_push_resumes_from_the_origins_offset(nursery: trio.Nursery, tmp_path: Path) -> None:
    push = await slow_push(nursery, tmp_path, 16 * MiB, seed=3)  # 4 s through the relay
    herd, relay, data, digest, command = push.herd, push.relay, push.data, push.digest, push.command
    process = await push.start(tmp_path)
    with trio.fail_after(30):
        while not (found := records(tmp_path)):
            await trio.sleep(0.05)
        [record] = found
        assert record["digest"] == digest and record["size"] == len(data)
        while (offset := await upload_offset(herd.url("origin"), digest, str(record["uid"]))) < 3 * MiB:
            await trio.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert offset < len(data), "killed mid-way"
    offset = await upload_offset(herd.url("origin"), digest, str(record["uid"]))  # what the origin kept

    relay.rate, relay.sent = 0, 0
    resumed = await swarmreg(tmp_path, *command)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert resumed.stdout.decode() == digest + "\n"
    assert "resuming the upload at" in resumed.stderr.decode()
    # The rest, and the requests' heads.
    assert offset >= 3 * MiB and relay.sent < len(data) - offset + (256 << 10), (relay.sent, offset)
    assert blob_files(Path(herd.config.data_dir))[digest[7:]] == len(data)
    assert records(tmp_path) == [], "committed: the record is gone"


async def test_a_second_push_of_the_same_blob_is_refused_while_one_runs(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    relay = Relay(herd.url("origin").removeprefix("http://"), rate=2 * MiB)
    await nursery.start(relay.run)
    source = tmp_path / "big.bin"
    source.write_bytes(random_bytes(8 * MiB, seed=4))
    command = ["blob", "push", str(source), "--origin", f"http://{relay.address}", "--namespace", NS]
    first = await trio.lowlevel.open_process([*SWARMREG, *command], stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, env=cli_env(tmp_path))
    with trio.fail_after(30):
        while not records(tmp_path):
            await trio.sleep(0.05)
    second = await swarmreg(tmp_path, *command)
    assert "another swarmreg blob push of sha256:" in one_line_error(second, 1)
    relay.rate = 0
    assert await first.wait() == 0


async def test_careless_input_gets_one_line_and_changes_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    origin = herd.url("origin")
    source = tmp_path / "small.bin"
    source.write_bytes(b"x" * 1000)
    cases = [
        (["blob", "push", str(tmp_path), "--origin", origin], 2, "is a directory"),
        (["blob", "push", str(tmp_path / "missing"), "--origin", origin], 2, "No such file or directory"),
        (["blob", "push", "/dev/null", "--origin", origin], 2, "not a regular file"),
        (["blob", "push", str(source), "--origin", "http://127.0.0.1:1"], 1, "cannot reach the origin"),
        (["blob", "push", str(source), "--origin", "ftp://example"], 2, "is not a URL"),
        (["blob", "push", str(source), "--origin", origin, "--namespace", "../up"], 2, "is not a namespace"),
        (["blob", "push", str(source), "--origin", origin, "--chunk-size", "lots"], 2, "--chunk-size"),
        (["blob", "push", str(source), "--origin", origin, "--ca", "/nonexistent"], 2, "for an https origin"),
    ]
    for args, status, message in cases:
        assert message in one_line_error(await swarmreg(tmp_path, *args), status), args
    assert blob_files(Path(herd.config.data_dir)) == {}


async def test_an_origin_that_lies_about_its_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A scripted origin: the recorded session holds more bytes than the file (the push starts
    over), then one whose offset is no number (one line, exit 1)."""
    uid, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    seen: list[str] = []
    size_answer = {"value": "999999999"}

    def origin(method: str, path: str, headers: dict[str, str]) -> bytes:
        seen.append(f"{method} {path.split('?')[0].rsplit('/', 1)[-1]}")
        if path == "/health":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n"
        if method == "GET":
            return (f"HTTP/1.1 204 No Content\r\n{UPLOAD_SIZE}: {size_answer['value']}\r\n"
                    "Connection: close\r\n\r\n").encode()
        if method == "POST":
            return f"HTTP/1.1 200 OK\r\nLocation: {fresh}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        return b"HTTP/1.1 200 OK\r\nBlob-Size: 1000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    address = await nursery.start(serve_script, origin)
    source = tmp_path / "small.bin"
    source.write_bytes(b"y" * 1000)
    digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    url = f"http://{address}"
    record_dir = tmp_path / "state" / "swarmreg" / "pushes"
    record_dir.mkdir(parents=True)
    name = hashlib.sha256("\0".join((url, NS, digest)).encode()).hexdigest()[:32]
    record = {"origin": url, "namespace": NS, "digest": digest, "uid": uid, "size": 1000}
    (record_dir / f"{name}.json").write_text(json.dumps(record))

    done = await swarmreg(tmp_path, "blob", "push", str(source), "--origin", url, "--namespace", NS)
    assert done.returncode == 0, done.stderr.decode()
    assert "more than the file's 1000: starting over" in done.stderr.decode()
    assert seen[:4] == ["GET health", f"GET {uid}", f"DELETE {uid}", "POST uploads"], seen
    assert seen[4:] == [f"PATCH {fresh}", f"PUT {fresh}"], seen

    (record_dir / f"{name}.json").write_text(json.dumps(record))
    size_answer["value"] = "lots"
    assert "without its size" in one_line_error(
        await swarmreg(tmp_path, "blob", "push", str(source), "--origin", url, "--namespace", NS), 1)
    assert os.path.exists(record_dir / f"{name}.json"), "kept: the session may be fine once the origin is"


async def wait_for_offset(tmp_path: Path, origin: str, digest: str, at_least: int) -> None:
    with trio.fail_after(30):
        while not (found := records(tmp_path)):
            await trio.sleep(0.05)
        while await upload_offset(origin, digest, str(found[0]["uid"])) < at_least:
            await trio.sleep(0.05)


async def test_ctrl_c_keeps_the_session_and_a_changed_file_fails_the_commit(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    push = await slow_push(nursery, tmp_path, 12 * MiB, seed=10)
    herd, data, digest = push.herd, push.data, push.digest
    process = await push.start(tmp_path, subprocess.PIPE)
    await wait_for_offset(tmp_path, herd.url("origin"), digest, 2 * MiB)
    process.send_signal(signal.SIGINT)
    assert await process.wait() == 130
    assert process.stderr is not None
    assert b"interrupted: run the same command again to resume" in await process.stderr.receive_some(65536)
    [record] = records(tmp_path)
    assert await upload_offset(herd.url("origin"), digest, str(record["uid"])) >= 2 * MiB, "kept for the next run"

    # The next run resumes; the file changes under it (after it was hashed): the origin's digest
    # check refuses the commit, and the record goes with the session.
    process = await push.start(tmp_path, subprocess.PIPE)
    await wait_for_offset(tmp_path, herd.url("origin"), digest, 8 * MiB)
    with (tmp_path / "big.bin").open("r+b") as file:
        file.seek(len(data) - 10)
        file.write(b"0123456789")
    assert await process.wait() == 1
    assert process.stderr is not None
    stderr = (await process.stderr.receive_some(65536)).decode()
    assert "did the file change while it was pushed?" in stderr and "Traceback" not in stderr, stderr
    assert records(tmp_path) == [] and digest[7:] not in blob_files(Path(herd.config.data_dir))
