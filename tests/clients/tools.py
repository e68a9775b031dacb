"""Running real client binaries from tests: finding them, running commands, owning daemons.

Commands run with ``trio.run_process`` so a registry served inside the test's own Trio run keeps
answering while a client talks to it. Daemons are child processes in their own session, stopped
by PID (SIGTERM, then SIGKILL of their process group) and their temp dirs removed, whatever
happened in the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest
import trio

COMMAND_TIMEOUT = 600  # a safety net against hung clients, not a performance assertion


def require_binary(name: str, package: str, *, root: bool = False) -> str:
    """The path of ``name``, or skip the test naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: install the Debian package {package!r} "
                    f"(scripts/test installs scripts/debian-packages.txt when run as root)")
    if root and os.geteuid() != 0:
        pytest.skip(f"{name} needs root to run here")
    return path


def hostport(base_url: str) -> str:
    """``http://127.0.0.1:5000`` -> ``127.0.0.1:5000``, the registry part of an image reference."""
    return urlsplit(base_url).netloc


class CommandFailed(AssertionError):
    """A client command exited non-zero; the message carries its command line and output."""


@attrs.frozen
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


async def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True,
              cwd: Path | None = None, stdin: bytes = b"") -> Result:
    """Run a command to completion without blocking the Trio run; raise CommandFailed if asked."""
    full_env = {**os.environ, **(env or {})}
    with trio.fail_after(COMMAND_TIMEOUT):
        done = await trio.run_process(list(argv), stdin=stdin, capture_stdout=True,
                                      capture_stderr=True, check=False, env=full_env, cwd=cwd)
    result = Result(tuple(argv), done.returncode, done.stdout.decode(errors="replace"),
                    done.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {result.returncode}\n"
                            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
    return result


def short_tempdir(prefix: str) -> Path:
    """A new directory under /tmp with a short path (unix sockets allow ~107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=f"sr-{prefix}-", dir="/tmp"))


def unmount_under(root: Path) -> None:
    """Lazily unmount anything a daemon left mounted below ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def remove_tree(root: Path) -> None:
    """Unmount leftovers, then delete ``root``."""
    if root.exists():
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def log_tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


@attrs.define
class Daemon:
    """A long-running child process with its output in ``log``; stop it with ``stop()``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log: Path, *,
              env: Mapping[str, str] | None = None) -> Daemon:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, **(env or {})})
        return cls(name, process, log)

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``ready`` until true; fail (stopping the daemon) if it exits or never gets ready."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before "
                                   f"{what}:\n{log_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready ({what}) after {timeout}s:\n"
                                   f"{log_tail(self.log)}")
            time.sleep(0.05)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM by PID, wait, then SIGKILL the daemon's process group (its own session)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # children it left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def socket_exists(path: Path) -> Callable[[], bool]:
    return lambda: path.is_socket()
