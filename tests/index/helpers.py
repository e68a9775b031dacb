"""What the index's tests share: media types and made-up digests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import psycopg

from swarmreg.config import is_postgres_url
from swarmreg.digest import Digest
from swarmreg.index.postgres_store import MIGRATIONS as POSTGRES_MIGRATIONS
from swarmreg.index.postgres_store import translate
from swarmreg.index.sqlite_store import MIGRATIONS as SQLITE_MIGRATIONS

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(n: object) -> Digest:
    """A digest named by ``n`` (the sha256 of its text)."""
    return Digest.of(str(n).encode())


def old_database(database: str, version: int, rows: Sequence[tuple[str, tuple[object, ...]]]) -> None:
    """A database (a SQLite file or a PostgreSQL URL) as swarmreg with schema ``version`` left it
    (the steps up to it), then ``rows``' statements."""
    migrations = POSTGRES_MIGRATIONS if is_postgres_url(database) else SQLITE_MIGRATIONS
    statements: list[tuple[str, tuple[object, ...]]] = [
        ("CREATE TABLE schema_version (version INTEGER NOT NULL)", ()),
        ("INSERT INTO schema_version VALUES (?)", (version,)),
        *((statement, ()) for step in range(1, version + 1) for statement in migrations[step]), *rows]
    if is_postgres_url(database):
        with psycopg.connect(database) as connection:
            for statement, args in statements:
                connection.execute(translate(statement), args)
        return
    db = sqlite3.connect(database)
    for statement, args in statements:
        db.execute(statement, args)
    db.commit()
    db.close()
