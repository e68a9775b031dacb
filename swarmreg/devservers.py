"""The HA devcluster's Redis and PostgreSQL: the Debian servers as child processes, their data
under the devcluster's data directory, reached on 127.0.0.1 with a password made at first start."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from swarmreg.config import Address

# The database and user the index nodes use.
DATABASE = "swarmreg"
USER = "swarmreg"
# How long a server may take to accept connections (PostgreSQL's first start runs initdb first).
READY_TIMEOUT = 60.0


class ServerError(Exception):
    """A server is not installed, cannot run here, or did not start."""


def _password(path: Path) -> str:
    """The password kept in ``path`` (mode 0600), made on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(16))
    return path.read_text().strip()


def _private_file(path: Path, text: str) -> None:
    """Write ``path`` afresh with mode 0600 (it holds a password)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


class ServerProcess:
    """One server process, started again by ``start`` (same data, same port) after it died."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, directory: Path, address: Address) -> None:
        self.directory = directory
        self.address = address
        self.process: trio.Process | None = None

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def password(self) -> str:
        return _password(self.password_file)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make what the server needs in its directory before it starts (blocking)."""

    def popen_options(self) -> dict[str, Any]:
        return {}

    def ping(self) -> None:
        """Return once the server answers, raise otherwise (blocking: run in a thread)."""
        raise NotImplementedError

    async def start(self, relay: Callable[[str, trio.abc.ReceiveStream], Any], nursery: trio.Nursery) -> None:
        """Start the server, its output relayed by ``relay`` in ``nursery``; return once it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await trio.to_thread.run_sync(self.prepare)
        self.process = await trio.lowlevel.open_process(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            **self.popen_options())
        assert self.process.stdout is not None  # stdout=PIPE
        nursery.start_soon(relay, self.name, self.process.stdout)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.process is not None
        error: Exception | None = None
        with trio.move_on_after(READY_TIMEOUT):
            while self.process.poll() is None:
                try:
                    return await trio.to_thread.run_sync(self.ping)
                except Exception as failed:  # not up yet
                    error = failed
                await trio.sleep(0.2)
        if self.process.poll() is None:
            await self.stop()
            raise ServerError(f"{self.name} did not answer within {READY_TIMEOUT:g} s ({error})")
        raise ServerError(f"{self.name} exited with status {self.process.returncode} before it answered "
                          "(its log lines above say why)")

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (``stop_signal``), killing it if it has not exited after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
        with trio.move_on_after(timeout):
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()

    def describe(self) -> dict[str, Any]:
        """Its cluster.json entry (no password: that is in ``password_file``)."""
        return {"pid": self.pid, "running": self.running, "address": str(self.address), "url": self.url(False),
                "data_dir": str(self.directory), "password_file": str(self.password_file)}

    def url(self, with_password: bool = True) -> str:
        raise NotImplementedError


class RedisServer(ServerProcess):
    """redis-server without persistence (the trackers' peer store is rebuilt by the next announces)."""

    name = "redis"

    @staticmethod
    def executable() -> str:
        found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                 else None)
        if found is None:
            raise ServerError("redis-server is not installed (Debian: apt-get install redis-server; "
                              "scripts/devcluster --ha installs it when run as root)")
        return found

    def prepare(self) -> None:
        # The password stays off the command line: a config file only its owner reads.
        _private_file(self.directory / "redis.conf", "\n".join([
            f"bind {self.address.host}", f"port {self.address.port}", f'dir "{self.directory}"',
            'save ""', "appendonly no", "protected-mode yes", "loglevel warning",
            f"requirepass {self.password}", ""]))

    def argv(self) -> list[str]:
        return [self.executable(), str(self.directory / "redis.conf")]

    def url(self, with_password: bool = True) -> str:
        secret = f":{self.password}@" if with_password else ""
        return f"redis://{secret}{self.address}/0"

    def ping(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url(), socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()


def postgres_binaries() -> Path:
    """The directory of Debian's PostgreSQL programs (the newest version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ServerError("PostgreSQL is not installed (Debian: apt-get install postgresql; "
                          "scripts/devcluster --ha installs it when run as root)")
    return Path(found[-1]).parent


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster of its own (initdb at first start), password authentication only.

    PostgreSQL refuses to run as root. As root, it runs in a user namespace where it is
    ``nobody`` (``unshare --user``: its files stay root's, any data directory works), else as the
    user ``nobody`` itself (which must then reach the data directory)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # a fast shutdown: its clients (the index nodes) may still be connected

    def __init__(self, directory: Path, address: Address) -> None:
        super().__init__(directory, address)
        self.bin = postgres_binaries()
        self._as_user: tuple[list[str], dict[str, Any]] | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, with_password: bool = True) -> str:
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{USER}{secret}@{self.address}/{DATABASE}"

    def _unprivileged(self) -> tuple[list[str], dict[str, Any]]:
        """The argv prefix and Popen options that run a program of PostgreSQL as a user it accepts."""
        if self._as_user is not None:
            return self._as_user
        if os.geteuid() != 0:
            self._as_user = ([], {})
            return self._as_user
        nobody = pwd.getpwnam("nobody")
        userns = ["unshare", "--user", f"--map-user={nobody.pw_uid}", f"--map-group={nobody.pw_gid}", "--"]
        if shutil.which("unshare") and subprocess.run([*userns, "true"], capture_output=True).returncode == 0:
            self._as_user = (userns, {})
            return self._as_user
        options: dict[str, Any] = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        os.chown(self.directory, nobody.pw_uid, nobody.pw_gid)
        if subprocess.run(["test", "-w", str(self.directory), "-a", "-x", str(self.directory)],
                          capture_output=True, **options).returncode != 0:
            raise ServerError(f"PostgreSQL refuses to run as root, this host allows no user namespace "
                              f"(unshare --user) to run it in, and the user nobody cannot reach {self.directory}: "
                              "use a --data-dir every user may traverse (e.g. under /tmp), or run as another user")
        self._as_user = ([], options)
        return self._as_user

    def _run(self, argv: Sequence[str]) -> None:
        prefix, options = self._unprivileged()
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, cwd=self.directory, **options)
        if done.returncode != 0:
            raise ServerError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        shutil.rmtree(self.data, ignore_errors=True)  # an initdb that did not finish
        pwfile = self.directory / "initdb-password"
        _private_file(pwfile, self.password)
        prefix, options = self._unprivileged()
        if "user" in options:
            os.chown(pwfile, options["user"], options["group"])
        try:
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                       f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        prefix, _ = self._unprivileged()
        # Its Unix socket in its own directory, not /var/run/postgresql (which may not exist).
        return [*prefix, str(self.bin / "postgres"), "-D", str(self.data), "-c",
                f"listen_addresses={self.address.host}", "-c", f"port={self.address.port}",
                "-c", f"unix_socket_directories={self.directory}"]

    def popen_options(self) -> dict[str, Any]:
        return self._unprivileged()[1]

    def ping(self) -> None:
        import psycopg

        admin = f"postgresql://{USER}:{self.password}@{self.address}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                connection.execute(f"CREATE DATABASE {DATABASE}")
