"""What the CLI transfer tests share: the command as a child process (plain or under a
pseudo-terminal), a herd and an agent, a TCP relay that throttles and counts what passes, and a
hand-written HTTP server that answers whatever a test scripts."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from tests.conftest import RunningDaemon, make_config, start_daemon

NS = "team/blobs"
SWARMREG = [sys.executable, "-m", "swarmreg"]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: its state under tmp_path, never the user's."""
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1", **extra}


async def swarmreg(tmp_path: Path, *args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    """``swarmreg ARGS`` to its end, standard output and error captured (not a terminal)."""
    done = await trio.run_process([*SWARMREG, *args], stdin=stdin, capture_stdout=True, capture_stderr=True,
                                  check=False, env=cli_env(tmp_path, **env))
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, done.stderr)


def one_line_error(done: subprocess.CompletedProcess[bytes], status: int) -> str:
    """The single line a failed command printed on standard error (no traceback)."""
    stderr = done.stderr.decode()
    assert done.returncode == status, (done.returncode, stderr)
    lines = [line for line in stderr.splitlines() if line.strip() and not _progress_line(line)]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def _progress_line(line: str) -> bool:
    return line.startswith(("hash ", "push ", "pull ", "check ")) or line.startswith("resuming ")


async def under_pty(tmp_path: Path, *args: str, columns: int = 120) -> tuple[int, str]:
    """``swarmreg ARGS`` with standard error on a pseudo-terminal (standard output a pipe), as
    in a terminal: its exit status and what the terminal showed."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = await trio.lowlevel.open_process([*SWARMREG, *args], stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=follower,
                                               env=cli_env(tmp_path, TERM="xterm-256color", COLUMNS=str(columns)))
    os.close(follower)
    shown = bytearray()
    while True:
        try:
            data = os.read(leader, 65536)
        except BlockingIOError:
            if process.poll() is not None:
                break
            await trio.sleep(0.02)
            continue
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    status = await process.wait()
    os.close(leader)
    return status, shown.decode(errors="replace")


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *overrides: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(tmp_path / "herd", *overrides), ["origin", "tracker"])


async def start_agent(nursery: trio.Nursery, tmp_path: Path, herd: RunningDaemon, *overrides: str) -> RunningDaemon:
    config = make_config(tmp_path / "agent", f"agent.tracker={herd.ready['roles']['tracker']['ws']}", *overrides)
    return await start_daemon(nursery, config, ["agent"])


@attrs.define
class Relay:
    """A TCP relay to ``target`` on 127.0.0.1 port 0: the bytes in each direction counted
    (``sent`` to the target, ``received`` from it), each held to ``rate`` bytes a second (0: no
    limit); ``cut()`` drops every connection."""

    target: str
    rate: int = 0
    sent: int = 0
    received: int = 0
    address: str = ""
    _connections: set[trio.CancelScope] = attrs.field(factory=set)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = f"{host}:{port}"
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, client: trio.SocketStream) -> None:
        host, _, port = self.target.rpartition(":")
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                async with (client, await trio.open_tcp_stream(host, int(port)) as server,
                            trio.open_nursery() as nursery):
                    nursery.start_soon(self._pump, client, server, True)
                    nursery.start_soon(self._pump, server, client, False)
            finally:
                self._connections.discard(scope)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, upstream: bool) -> None:
        try:
            while data := await source.receive_some(16384 if self.rate else 65536):
                if upstream:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                if self.rate:
                    await trio.sleep(len(data) / self.rate)
                await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def cut(self) -> None:
        for scope in self._connections:
            scope.cancel()
        self._connections.clear()


# A scripted answer: given the request's head (method, path, headers), the bytes to send back.
Script = Callable[[str, str, dict[str, str]], Awaitable[bytes] | bytes]


async def serve_script(script: Script, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """An HTTP/1.1 server on 127.0.0.1 port 0 answering each request with ``script``'s bytes, then
    closing the connection (bodies of requests are read as their Content-Length says)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    host, port = listeners[0].socket.getsockname()[:2]

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            try:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, body = buffer.partition(b"\r\n\r\n")
                request_line, *lines = head.decode().split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
                length = int(headers.get("content-length", "0"))
                while len(body) < length:
                    body += await stream.receive_some(65536)
                answer = script(method, path, headers)
                await stream.send_all(answer if isinstance(answer, bytes) else await answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    task_status.started(f"{host}:{port}")
    await trio.serve_listeners(handle, listeners)
