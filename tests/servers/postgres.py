"""A real PostgreSQL server for tests (Debian's ``postgresql``): initdb into a temporary directory,
listening on 127.0.0.1 at a free port, password authentication (so tests can check that the
password never shows). As root, the server runs as ``nobody`` (PostgreSQL refuses root).

``postgres_server`` is one server for the whole session; ``postgres_database`` a fresh database
in it for each test (its URL). Tests that stop the server make their own ``PostgresServer``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

USER = "swarmreg"
PASSWORD = "pg-test-password-5b1e"  # noqa: S105 - a throwaway server's


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql, scripts/debian-packages.txt)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``start`` and ``stop`` may repeat (same port)."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="swarmreg-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            self._as = ["runuser", "-u", "nobody", "--"]
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        if self._as:
            shutil.chown(password_file, "nobody", "nogroup")
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                  f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8")
        password_file.unlink()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=self.root)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options)

    def stop(self) -> None:
        """Stop the server at once (as a crash would: connections are cut)."""
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database``, password included."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        """Stop the server if it runs, and remove its directory."""
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # it was not running
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database on the session's server."""
    return postgres_server.create_database()
