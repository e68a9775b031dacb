"""Fixtures of the replication tests: the sending cluster's index on SQLite or on a real PostgreSQL."""

from __future__ import annotations

import pytest

from tests.servers.postgres import postgres_database, postgres_server

__all__ = ["postgres_database", "postgres_server"]  # fixtures, for the tests here


@pytest.fixture(params=["sqlite", "postgres"])
def index_database(request: pytest.FixtureRequest) -> str:
    """What the sending cluster's ``index.database`` says: its SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "index.db"
    url: str = request.getfixturevalue("postgres_database")
    return url
