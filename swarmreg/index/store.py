"""The index's SQLite store: tags, manifests, the blob links that make a blob visible in a repository,
and each manifest's references (the blobs and child manifests it names: what garbage collection keeps).

One connection, used by one worker thread at a time (a trio.Lock guards it), in WAL mode; every
write is one ``BEGIN IMMEDIATE`` transaction. Names and digests are taken as already validated
(swarmreg.index.validate); lists are in byte order, as CNCF distribution sorts them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, STORAGE_FULL, SwarmregError

T = TypeVar("T")

SCHEMA_VERSION = 2

# Statements that take the schema from version N-1 to N, by N.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
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
}

# Every repository that holds anything (a tag needs a manifest, so tags add none).
_REPOSITORIES = "SELECT repository FROM manifests UNION SELECT repository FROM blobs"


class SchemaError(Exception):
    """The database was written by a newer swarmreg (its schema version is unknown here)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class Page:
    """One page of a sorted listing; ``next_last`` is the ``last`` of the next page, None at the end."""

    items: list[str]
    next_last: str | None = None


@attrs.frozen
class ManifestRecord:
    """What the index knows of a manifest in one repository (not its content: that is a blob)."""

    repository: str
    digest: Digest
    media_type: str
    size: int
    artifact_type: str | None = None
    subject: Digest | None = None
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as the index API returns it."""
        return {"digest": str(self.digest), "media_type": self.media_type, "size": self.size,
                "artifact_type": self.artifact_type,
                "subject": None if self.subject is None else str(self.subject),
                "annotations": dict(self.annotations), "created": self.created}

    def descriptor(self) -> dict[str, Any]:
        """The record as an OCI descriptor in a referrers list."""
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size,
                "artifactType": self.artifact_type, "annotations": dict(self.annotations)}


_MANIFEST_COLUMNS = "repository, digest, media_type, size, artifact_type, subject, annotations, created"


def _manifest(row: tuple[Any, ...]) -> ManifestRecord:
    repository, digest, media_type, size, artifact_type, subject, annotations, created = row
    return ManifestRecord(repository, Digest.parse(digest), media_type, size, artifact_type,
                          None if subject is None else Digest.parse(subject), json.loads(annotations), created)


def _page(rows: list[tuple[str]], n: int | None) -> Page:
    items = [row[0] for row in rows]
    if n is not None and len(items) > n:
        del items[n:]
        return Page(items, items[-1])
    return Page(items)


def _limit(n: int | None) -> int:
    # One row more than asked shows whether another page follows; -1 is SQLite's "no limit".
    return -1 if n is None else n + 1


class IndexStore:
    """The index's data in one SQLite file; every method runs its SQL off the event loop.

    Use as ``async with IndexStore(path) as store:`` (or ``await open()`` / ``await aclose()``).
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        # FULL syncs the WAL at every commit (an acknowledged write survives a power cut);
        # NORMAL only at checkpoints (the database stays consistent, the last writes may be lost).
        self.fsync = fsync
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    async def __aenter__(self) -> IndexStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connection ------------------------------------------------------------------------

    async def open(self) -> IndexStore:
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
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise SchemaError(f"index database schema version {version} is newer than this "
                                  f"swarmreg's ({SCHEMA_VERSION})")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def aclose(self) -> None:
        """Close the database (waiting for the call in progress, if any)."""
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._db is not None:
                    db, self._db = self._db, None
                    await trio.to_thread.run_sync(db.close)

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return await self.read(lambda db: db.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    async def _call(self, write: bool, work: Callable[[sqlite3.Connection], T]) -> T:
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

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(db)`` in one read transaction (a consistent snapshot), in the worker thread."""
        return await self._call(False, work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(db)`` in one ``BEGIN IMMEDIATE`` transaction, in the worker thread; it commits
        when ``work`` returns and rolls back when it raises."""
        return await self._call(True, work)

    # -- tags --------------------------------------------------------------------------------

    async def put_tag(self, repository: str, tag: str, digest: Digest) -> None:
        """Point ``tag`` at ``digest``; MANIFEST_UNKNOWN unless that manifest is in the repository."""
        def work(db: sqlite3.Connection) -> None:
            if not _has_manifest(db, repository, digest):
                raise SwarmregError(MANIFEST_UNKNOWN, detail={"repository": repository, "digest": str(digest)})
            db.execute("""INSERT INTO tags (repository, tag, digest, updated) VALUES (?, ?, ?, ?)
                          ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest,
                          updated = excluded.updated WHERE digest != excluded.digest""",
                       (repository, tag, str(digest), _now()))

        await self.write(work)

    async def get_tag(self, repository: str, tag: str) -> Digest | None:
        """The digest ``tag`` points at, or None."""
        row = await self.read(lambda db: db.execute(
            "SELECT digest FROM tags WHERE repository = ? AND tag = ?", (repository, tag)).fetchone())
        return None if row is None else Digest.parse(row[0])

    async def delete_tag(self, repository: str, tag: str) -> bool:
        """Remove ``tag``; False if there was no such tag."""
        return await self.write(lambda db: db.execute(
            "DELETE FROM tags WHERE repository = ? AND tag = ?", (repository, tag)).rowcount > 0)

    async def list_tags(self, repository: str, n: int | None = None, last: str | None = None) -> Page:
        """Up to ``n`` tags (all when None) sorted, after ``last``; NAME_UNKNOWN for an unknown repository."""
        def work(db: sqlite3.Connection) -> Page:
            if not _has_repository(db, repository):
                raise SwarmregError(NAME_UNKNOWN, detail={"name": repository})
            if n == 0:
                return Page([])
            return _page(db.execute(
                "SELECT tag FROM tags WHERE repository = ? AND tag > ? ORDER BY tag LIMIT ?",
                (repository, last or "", _limit(n))).fetchall(), n)

        return await self.read(work)

    async def catalog(self, n: int | None = None, last: str | None = None) -> Page:
        """Up to ``n`` repository names (all when None) sorted, after ``last``."""
        if n == 0:
            return Page([])
        return await self.read(lambda db: _page(db.execute(
            f"SELECT repository FROM ({_REPOSITORIES}) WHERE repository > ? ORDER BY repository LIMIT ?",
            (last or "", _limit(n))).fetchall(), n))

    # -- manifests ---------------------------------------------------------------------------

    async def put_manifest(self, repository: str, digest: Digest, *, media_type: str, size: int,
                           artifact_type: str | None = None, subject: Digest | None = None,
                           annotations: Mapping[str, str] | None = None, blobs: Sequence[Digest] = (),
                           children: Sequence[Digest] = (), pending: str | None = None) -> ManifestRecord:
        """Record the manifest in the repository (again: its fields are replaced, ``created`` kept),
        with what it names: ``blobs`` (config and layers) and ``children`` (an index's manifests).

        Every one of ``blobs`` must be linked in the repository (else MANIFEST_BLOB_UNKNOWN), checked
        in the same transaction that records the manifest, and each link is confirmed (its ``linked``
        time renewed): a garbage collection that removes a stale link is ordered before or after
        this, never between the check and the record. The push ``pending`` of the manifest's
        bytes (note_pending) is over.
        """
        def work(db: sqlite3.Connection) -> ManifestRecord:
            now = _now()
            for blob in blobs:
                if db.execute("UPDATE blobs SET linked = ? WHERE repository = ? AND digest = ?",
                              (now, repository, str(blob))).rowcount == 0:
                    raise SwarmregError(MANIFEST_BLOB_UNKNOWN, detail={"digest": str(blob)})
            db.execute(f"""INSERT INTO manifests ({_MANIFEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                           ON CONFLICT (repository, digest) DO UPDATE SET
                           media_type = excluded.media_type, size = excluded.size,
                           artifact_type = excluded.artifact_type, subject = excluded.subject,
                           annotations = excluded.annotations""",
                       (repository, str(digest), media_type, size, artifact_type,
                        None if subject is None else str(subject),
                        json.dumps(dict(annotations or {}), sort_keys=True, separators=(",", ":")), now))
            db.execute("UPDATE manifests SET refs_known = 1 WHERE repository = ? AND digest = ?",
                       (repository, str(digest)))
            db.execute("DELETE FROM refs WHERE repository = ? AND manifest = ?", (repository, str(digest)))
            db.executemany("INSERT OR IGNORE INTO refs (repository, manifest, digest, kind) VALUES (?, ?, ?, ?)",
                           [(repository, str(digest), str(d), kind)
                            for kind, named in (("blob", blobs), ("manifest", children)) for d in named])
            _clear_pending(db, digest, pending)
            record = _get_manifest(db, repository, digest)
            assert record is not None
            return record

        return await self.write(work)

    async def get_manifest(self, repository: str, digest: Digest) -> ManifestRecord | None:
        """The manifest's record, or None."""
        return await self.read(lambda db: _get_manifest(db, repository, digest))

    async def delete_manifest(self, repository: str, digest: Digest) -> list[str] | None:
        """Remove the manifest and every tag pointing at it; returns those tags, None if it was unknown.

        What only it named in the repository is released with it: its blobs' links (left for
        garbage collection to remove at once, not after the grace period) and an index's child
        manifests that no tag and no other manifest names (deleted too, as Harbor does).
        """
        def work(db: sqlite3.Connection) -> list[str] | None:
            if not _has_manifest(db, repository, digest):
                return None
            return _delete_manifest(db, repository, str(digest), _now())

        return await self.write(work)

    async def referrers(self, repository: str, subject: Digest,
                        artifact_type: str | None = None) -> list[ManifestRecord]:
        """The repository's manifests whose subject is ``subject`` (of ``artifact_type`` if given), by digest."""
        query = f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE repository = ? AND subject = ?"
        args: tuple[Any, ...] = (repository, str(subject))
        if artifact_type is not None:
            query += " AND artifact_type = ?"
            args += (artifact_type,)
        rows = await self.read(lambda db: db.execute(query + " ORDER BY digest", args).fetchall())
        return [_manifest(row) for row in rows]

    # -- pushes under way -------------------------------------------------------------------

    async def note_pending(self, digest: Digest, token: str, ttl: float) -> None:
        """Note that a push (``token``: one request's) is about to store ``digest`` at the origin:
        garbage collection keeps the digest until ``clear_pending`` or for ``ttl`` seconds."""
        until = (datetime.now(UTC) + timedelta(seconds=ttl)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        await self.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO pending (digest, token, until) VALUES (?, ?, ?)", (str(digest), token, until)))

    async def clear_pending(self, digest: Digest, token: str) -> None:
        """The push ``token`` of ``digest`` is over (its link or record is in, or it failed)."""
        await self.write(lambda db: _clear_pending(db, digest, token))

    # -- blob links --------------------------------------------------------------------------

    async def link_blob(self, repository: str, digest: Digest, size: int, *, pending: str | None = None) -> None:
        """Make the blob visible in the repository, with its size (again: the link is renewed);
        the push ``pending`` of it (note_pending) is over."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("""INSERT INTO blobs (repository, digest, size, linked) VALUES (?, ?, ?, ?)
                          ON CONFLICT (repository, digest) DO UPDATE SET size = excluded.size,
                          linked = excluded.linked""", (repository, str(digest), size, _now()))
            _clear_pending(db, digest, pending)

        await self.write(work)

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The linked blob's size, or None when the blob is not linked in the repository."""
        row = await self.read(lambda db: db.execute(
            "SELECT size FROM blobs WHERE repository = ? AND digest = ?", (repository, str(digest))).fetchone())
        return None if row is None else row[0]

    async def unlink_blob(self, repository: str, digest: Digest) -> bool:
        """Remove the blob's link from the repository; False if it was not linked."""
        return await self.write(lambda db: db.execute(
            "DELETE FROM blobs WHERE repository = ? AND digest = ?", (repository, str(digest))).rowcount > 0)


def _has_manifest(db: sqlite3.Connection, repository: str, digest: Digest) -> bool:
    return db.execute("SELECT 1 FROM manifests WHERE repository = ? AND digest = ?",
                      (repository, str(digest))).fetchone() is not None


def _delete_manifest(db: sqlite3.Connection, repository: str, digest: str, now: str) -> list[str]:
    """Delete the manifest, its tags, and what it alone named (see IndexStore.delete_manifest)."""
    tags = [row[0] for row in db.execute(
        "SELECT tag FROM tags WHERE repository = ? AND digest = ? ORDER BY tag", (repository, digest))]
    named = db.execute("SELECT digest, kind FROM refs WHERE repository = ? AND manifest = ?",
                       (repository, digest)).fetchall()
    db.execute("DELETE FROM tags WHERE repository = ? AND digest = ?", (repository, digest))
    db.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))  # refs too
    _release(db, digest, now)
    for other, kind in named:
        if db.execute("SELECT 1 FROM refs WHERE repository = ? AND digest = ?", (repository, other)).fetchone():
            continue  # another manifest of the repository still names it
        if kind == "blob":
            db.execute("UPDATE blobs SET linked = '' WHERE repository = ? AND digest = ?", (repository, other))
            _release(db, other, now)
        elif (_has_manifest(db, repository, Digest.parse(other)) and not db.execute(
                "SELECT 1 FROM tags WHERE repository = ? AND digest = ?", (repository, other)).fetchone()):
            # Content addressing rules out cycles; nesting is as deep as the manifests pushed.
            tags += _delete_manifest(db, repository, other, now)
    return tags


def _clear_pending(db: sqlite3.Connection, digest: Digest, token: str | None) -> None:
    if token is not None:
        db.execute("DELETE FROM pending WHERE digest = ? AND token = ?", (str(digest), token))


def _release(db: sqlite3.Connection, digest: str, now: str) -> None:
    db.execute("INSERT INTO released (digest, at) VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET at = excluded.at",
               (digest, now))


def _has_repository(db: sqlite3.Connection, repository: str) -> bool:
    return bool(db.execute("SELECT EXISTS (SELECT 1 FROM manifests WHERE repository = ?) "
                           "OR EXISTS (SELECT 1 FROM blobs WHERE repository = ?)",
                           (repository, repository)).fetchone()[0])


def _get_manifest(db: sqlite3.Connection, repository: str, digest: Digest) -> ManifestRecord | None:
    row = db.execute(f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE repository = ? AND digest = ?",
                     (repository, str(digest))).fetchone()
    return None if row is None else _manifest(row)
