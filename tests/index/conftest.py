"""Fixtures of the index's tests: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from swarmreg.config import is_postgres_url
from swarmreg.index.postgres_store import PostgresIndexStore
from swarmreg.index.sqlite_store import SqliteIndexStore
from swarmreg.index.store import IndexStore
from tests.servers.postgres import postgres_database, postgres_server

__all__ = ["postgres_database", "postgres_server"]  # fixtures, for the tests here


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``[index] database`` would say: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "index.db")
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def new_store(database: str, tmp_path: Path) -> Callable[[], IndexStore]:
    """Makes a store (not open) on the test's database: another one is another index node."""
    def make() -> IndexStore:
        if is_postgres_url(database):
            return PostgresIndexStore(database, spool_dir=tmp_path)
        return SqliteIndexStore(database)

    return make


@pytest.fixture
async def store(new_store: Callable[[], IndexStore]) -> AsyncIterator[IndexStore]:
    """An IndexStore on a fresh database, open (SQLite, then PostgreSQL)."""
    async with new_store() as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteIndexStore]:
    """A SQLite store on tmp_path/index.db, for what only a file shows (its locks, its pragmas)."""
    async with SqliteIndexStore(tmp_path / "index.db") as opened:
        yield opened
