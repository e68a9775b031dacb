"""The index's SQLite store (IndexStore in one file, the embedded default for a single index node).

One connection, used by one worker thread at a time (a trio.Lock guards it), in WAL mode; every
write is one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from swarmreg.errors import STORAGE_FULL, SwarmregError
from swarmreg.index.store import Db, IndexStore, migrate

T = TypeVar("T")

# Statements that take the schema from version N-1 to N, by N (postgres_store has the same steps).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE manifests (
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            media_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            artifact_type TEXT,
            subject TEXT,
            annotations TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            PRIMARY KEY (repository, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX manifests_by_subject ON manifests (repository, subject, digest) WHERE subject IS NOT NULL",
        """CREATE TABLE tags (
            repository TEXT NOT NULL,
            tag TEXT NOT NULL,
            digest TEXT NOT NULL,
            updated TEXT NOT NULL,
            PRIMARY KEY (repository, tag),
            FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "CREATE INDEX tags_by_digest ON tags (repository, digest)",
        """CREATE TABLE blobs (
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (repository, digest)
        ) WITHOUT ROWID""",
    ),
    2: (
        # What each manifest names: kind 'blob' (its config and layers, which must be linked in
        # the repository) or 'manifest' (an index's children). Garbage collection marks from here.
        """CREATE TABLE refs (
            repository TEXT NOT NULL,
            manifest TEXT NOT NULL,
            digest TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
            PRIMARY KEY (repository, manifest, digest),
            FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "CREATE INDEX refs_by_digest ON refs (digest, repository)",
        # Manifests recorded before version 2 have unknown references (0): the collector reads
        # their content once before it trusts refs. New ones are recorded with them (1).
        "ALTER TABLE manifests ADD COLUMN refs_known INTEGER NOT NULL DEFAULT 1",
        "UPDATE manifests SET refs_known = 0",
        # When a client last pulled the manifest (an agent's record fetch counts); NULL: never.
        "ALTER TABLE manifests ADD COLUMN accessed TEXT",
        # When the link was last made or confirmed (an upload, a mount, a manifest naming the
        # blob): an unreferenced link younger than the grace period belongs to a push under way.
        "ALTER TABLE blobs ADD COLUMN linked TEXT NOT NULL DEFAULT ''",
        # Links older than version 2 count as made when the migration ran (_now()'s format).
        "UPDATE blobs SET linked = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        # Digests a delete left unnamed (a deleted manifest's own, its blobs, its children), and
        # when: garbage collection may sweep a file older than its release at once, without the
        # grace period that protects a push under way.
        """CREATE TABLE released (
            digest TEXT NOT NULL PRIMARY KEY,
            at TEXT NOT NULL
        ) WITHOUT ROWID""",
        # Blobs and manifests a push is storing at the origin (noted before its commit, cleared
        # once its link or record is in): garbage collection keeps them until then, or until
        # `until` for a proxy that died in between.
        """CREATE TABLE pending (
            digest TEXT NOT NULL,
            token TEXT NOT NULL,
            until TEXT NOT NULL,
            PRIMARY KEY (digest, token)
        ) WITHOUT ROWID""",
    ),
    3: (
        # Tags owed to remote clusters ([[index.replicate]]), in the order they were recorded
        # (swarmreg.index.replication_queue): put_tag adds a row per remote in its transaction.
        """CREATE TABLE replication (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            remote TEXT NOT NULL,
            repository TEXT NOT NULL,
            tag TEXT NOT NULL,
            digest TEXT NOT NULL,
            queued TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,
            last_error TEXT,
            leased_by TEXT,
            lease_until TEXT
        )""",
        "CREATE INDEX replication_by_repository ON replication (remote, repository, id)",
    ),
}


class SqliteIndexStore(IndexStore):
    """The index's data in one SQLite file."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.spool_dir = self.path.parent
        # FULL syncs the WAL at every commit (an acknowledged write survives a power cut);
        # NORMAL only at checkpoints (the database stays consistent, the last writes may be lost).
        self.fsync = fsync
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def describe(self) -> str:
        return f"SQLite {self.path}"

    async def open(self) -> SqliteIndexStore:
        """Open (or create) the database and bring its schema up to date."""
        async with self._lock:
            if self._db is None:
                self._db = await trio.to_thread.run_sync(self._connect)
        return self

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit BEGIN/COMMIT below.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("BEGIN IMMEDIATE")
            try:
                migrate(db, MIGRATIONS)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            db.close()
            raise
        return db

    async def aclose(self) -> None:
        """Close the database (waiting for the call in progress, if any)."""
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._db is not None:
                    db, self._db = self._db, None
                    await trio.to_thread.run_sync(db.close)

    async def _call(self, write: bool, work: Callable[[Db], T]) -> T:
        def transaction() -> T:
            assert self._db is not None
            db = self._db
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (a full disk) may leave the transaction open: close it, or
                # every later BEGIN fails and the index is stuck until a restart.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        async with self._lock:
            if self._db is None:
                raise RuntimeError("the index store is not open")
            # Not abandoned on cancellation: the lock stays held until the transaction is over.
            try:
                return await trio.to_thread.run_sync(transaction)
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise SwarmregError(STORAGE_FULL, "writing the index: database or disk is full") from None
                raise

    async def read(self, work: Callable[[Db], T]) -> T:
        return await self._call(False, work)

    async def write(self, work: Callable[[Db], T]) -> T:
        """As IndexStore.write, in one ``BEGIN IMMEDIATE`` transaction (SQLite's one writer)."""
        return await self._call(True, work)
