"""The index's store: tags, manifests, the blob links that make a blob visible in a repository, and
each manifest's references (the blobs and child manifests it names: what garbage collection keeps).

IndexStore is the interface every caller uses; its methods are written once, in SQL that SQLite
and PostgreSQL both read, over a ``Db`` (a DB-API connection in one transaction, ``?`` and
``:name`` placeholders). Two implementations open the transactions: swarmreg.index.sqlite_store
(one file, the embedded default) and swarmreg.index.postgres_store (a database several index
nodes share). Both version their schema alike (``migrate``). Names and digests are taken as
already validated (swarmreg.index.validate); lists are in byte order, as CNCF distribution sorts them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, SwarmregError

T = TypeVar("T")

# Both stores' schema version: a migration to version N is written for each of them.
SCHEMA_VERSION = 3

# Every repository that holds anything (a tag needs a manifest, so tags add none).
_REPOSITORIES = "SELECT repository FROM manifests UNION SELECT repository FROM blobs"


class Cursor(Protocol):
    """What a statement returns (sqlite3's and psycopg's cursors alike)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int = ..., /) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection inside one transaction: ``?`` and ``:name`` placeholders (sqlite3's own; the
    PostgreSQL store translates them). ``stream`` reads rows in batches (a server-side cursor on
    PostgreSQL) for results too large to hold."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


def stream(db: Db, sql: str, parameters: Any = ()) -> Cursor:
    """``sql``'s rows, fetched in batches where the database can (a large result: the live set)."""
    streaming: Callable[[str, Any], Cursor] | None = getattr(db, "stream", None)
    return db.execute(sql, parameters) if streaming is None else streaming(sql, parameters)


class SchemaError(Exception):
    """The database was written by a newer swarmreg (its schema version is unknown here)."""


def migrate(db: Db, migrations: Mapping[int, Sequence[str]]) -> int:
    """Bring the schema to SCHEMA_VERSION with ``migrations`` (statements by the version they
    reach), in the caller's write transaction; SchemaError for a newer schema. The version it found."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version: int = db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    if version > SCHEMA_VERSION:
        raise SchemaError(f"index database schema version {version} is newer than this "
                          f"swarmreg's ({SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in migrations[target]:
            db.execute(statement)
    if version < SCHEMA_VERSION:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return version


def timestamp(at: datetime) -> str:
    """``at`` (UTC) as the index writes times: ISO 8601 to the millisecond, ``Z``; such texts sort as time does."""
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return timestamp(datetime.now(UTC))


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


# A LIMIT that is none: SQLite has no other spelling both databases read.
NO_LIMIT = 2 ** 62


def _limit(n: int | None) -> int:
    # One row more than asked shows whether another page follows.
    return NO_LIMIT if n is None else n + 1


class IndexStore(ABC):
    """The index's data; every method runs its SQL off the event loop, in one transaction.

    Use as ``async with store:`` (or ``await open()`` / ``await aclose()``). Implementations give
    ``read``, ``write``, ``open``, ``aclose``, ``spool_dir`` (where garbage collection's live set
    is spooled: the data directory) and ``describe`` (for logs: never a password).
    """

    spool_dir: Path

    async def __aenter__(self) -> IndexStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abstractmethod
    async def open(self) -> IndexStore:
        """Connect and bring the schema up to date (SchemaError for a newer one)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close (waiting for the calls in progress); twice is fine."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data is, for a log line (no credential)."""

    @abstractmethod
    async def read(self, work: Callable[[Db], T]) -> T:
        """``work(db)`` in one read transaction (a consistent snapshot), in a worker thread."""

    @abstractmethod
    async def write(self, work: Callable[[Db], T]) -> T:
        """``work(db)`` in one write transaction, in a worker thread, serialized with every other
        write (of this store or any other on the same database); it commits when ``work``
        returns and rolls back when it raises. ``work`` may run more than once (a retried
        conflict): it must do nothing but SQL and what it undoes itself when it raises."""

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""
        version: int = await self.read(lambda db: db.execute("SELECT max(version) FROM schema_version").fetchone()[0])
        return version

    # -- tags --------------------------------------------------------------------------------

    async def put_tag(self, repository: str, tag: str, digest: Digest, *, replicate: Sequence[str] = ()) -> bool:
        """Point ``tag`` at ``digest``; MANIFEST_UNKNOWN unless that manifest is in the repository.
        A tag that changed (new, or moved) is queued for each remote cluster of ``replicate`` in the
        same transaction (swarmreg.index.replication_queue), so no crash loses it; whether it changed.
        A tag put again at the digest it has is not queued again: two clusters replicating to each
        other do not echo a tag back and forth."""
        def work(db: Db) -> bool:
            if not _has_manifest(db, repository, digest):
                raise SwarmregError(MANIFEST_UNKNOWN, detail={"repository": repository, "digest": str(digest)})
            now = _now()
            changed = db.execute("""INSERT INTO tags (repository, tag, digest, updated) VALUES (?, ?, ?, ?)
                          ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest,
                          updated = excluded.updated WHERE tags.digest != excluded.digest""",
                                 (repository, tag, str(digest), now)).rowcount > 0
            if changed and replicate:
                db.executemany("INSERT INTO replication (remote, repository, tag, digest, queued, next_attempt) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               [(remote, repository, tag, str(digest), now, now) for remote in replicate])
            return changed

        return await self.write(work)

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
        def work(db: Db) -> Page:
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
            f"SELECT repository FROM ({_REPOSITORIES}) AS held WHERE repository > ? ORDER BY repository LIMIT ?",
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
        def work(db: Db) -> ManifestRecord:
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
            db.executemany("INSERT INTO refs (repository, manifest, digest, kind) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING",
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
        def work(db: Db) -> list[str] | None:
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
        until = timestamp(datetime.now(UTC) + timedelta(seconds=ttl))
        await self.write(lambda db: db.execute(
            "INSERT INTO pending (digest, token, until) VALUES (?, ?, ?) "
            "ON CONFLICT (digest, token) DO UPDATE SET until = excluded.until", (str(digest), token, until)))

    async def clear_pending(self, digest: Digest, token: str) -> None:
        """The push ``token`` of ``digest`` is over (its link or record is in, or it failed)."""
        await self.write(lambda db: _clear_pending(db, digest, token))

    # -- blob links --------------------------------------------------------------------------

    async def link_blob(self, repository: str, digest: Digest, size: int, *, pending: str | None = None) -> None:
        """Make the blob visible in the repository, with its size (again: the link is renewed);
        the push ``pending`` of it (note_pending) is over."""
        def work(db: Db) -> None:
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


def _has_manifest(db: Db, repository: str, digest: Digest) -> bool:
    return db.execute("SELECT 1 FROM manifests WHERE repository = ? AND digest = ?",
                      (repository, str(digest))).fetchone() is not None


def _delete_manifest(db: Db, repository: str, digest: str, now: str) -> list[str]:
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


def _clear_pending(db: Db, digest: Digest, token: str | None) -> None:
    if token is not None:
        db.execute("DELETE FROM pending WHERE digest = ? AND token = ?", (str(digest), token))


def _release(db: Db, digest: str, now: str) -> None:
    db.execute("INSERT INTO released (digest, at) VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET at = excluded.at",
               (digest, now))


def _has_repository(db: Db, repository: str) -> bool:
    return bool(db.execute("SELECT EXISTS (SELECT 1 FROM manifests WHERE repository = ?) "
                           "OR EXISTS (SELECT 1 FROM blobs WHERE repository = ?)",
                           (repository, repository)).fetchone()[0])


def _get_manifest(db: Db, repository: str, digest: Digest) -> ManifestRecord | None:
    row = db.execute(f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE repository = ? AND digest = ?",
                     (repository, str(digest))).fetchone()
    return None if row is None else _manifest(row)
