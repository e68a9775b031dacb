"""Which IndexStore ``[index] database`` names: a PostgreSQL URL (``postgresql://`` or
``postgres://``), else a SQLite file relative to the data directory."""

from __future__ import annotations

from swarmreg.config import Config, is_postgres_url
from swarmreg.index.postgres_store import PostgresIndexStore
from swarmreg.index.sqlite_store import SqliteIndexStore
from swarmreg.index.store import IndexStore


def store_from_config(config: Config) -> IndexStore:
    """The index role's store (not open yet)."""
    database = config.index.database
    if is_postgres_url(database):
        return PostgresIndexStore(database, spool_dir=config.layout.root)
    return SqliteIndexStore(config.layout.setting(database), fsync=config.store.fsync)
