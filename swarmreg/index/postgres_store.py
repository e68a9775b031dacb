"""The index's PostgreSQL store: IndexStore in a database that several index nodes share.

psycopg 3's blocking API in trio's worker threads (at most POOL_SIZE at once), each transaction
on a connection from ``_Connections``. Writes are SERIALIZABLE and retried on a serialization
failure or deadlock, so every node sees the one-writer order the SQLite store gets from its lock;
reads are REPEATABLE READ READ ONLY (a snapshot, never retried). Text columns collate "C" (byte
order, as SQLite's). A database that fails (out of reach, a lock held too long) is UNAVAILABLE
(503) to callers, logged once when it fails and once when it answers again, never with the password.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
import trio
from psycopg.conninfo import conninfo_to_dict

from swarmreg.errors import BAD_REQUEST, STORAGE_FULL, UNAVAILABLE, SwarmregError
from swarmreg.index.store import Db, IndexStore, migrate
from swarmreg.redaction import REDACTED, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

# Connections (and worker threads) per index node.
POOL_SIZE = 8
# libpq's settings unless the URL has its own: a connection takes at most 5 s to open, one to a
# host that vanished (no RST: a partition, a dead VM) fails within about 30 s, not TCP's hours,
# and a statement waits at most 10 s for a lock (another client's LOCK TABLE, say), not forever.
CONNECTION_DEFAULTS = {"connect_timeout": 5, "keepalives_idle": 10, "keepalives_interval": 5,
                       "keepalives_count": 3, "tcp_user_timeout": 30_000, "options": "-c lock_timeout=10000"}
# Tries of a write that lost a serialization conflict to another writer.
CONFLICT_RETRIES = 20
# Any constant: the advisory lock that orders two nodes migrating at once.
_MIGRATION_LOCK = 0x5377_7265_6769_6478

# What a transaction that lost to another writer gets (nothing it wrote stays): it may run again.
_CONFLICTS = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)

_BEGIN_WRITE = "BEGIN ISOLATION LEVEL SERIALIZABLE"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# Each statement sees what was committed before it: a migration after another node's sees its tables.
_BEGIN_MIGRATION = "BEGIN ISOLATION LEVEL READ COMMITTED"

_C = 'COLLATE "C"'
# The SQLite store's steps (sqlite_store.MIGRATIONS), in PostgreSQL's words.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        f"""CREATE TABLE manifests (
            repository TEXT {_C} NOT NULL,
            digest TEXT {_C} NOT NULL,
            media_type TEXT NOT NULL,
            size BIGINT NOT NULL,
            artifact_type TEXT {_C},
            subject TEXT {_C},
            annotations TEXT NOT NULL DEFAULT '{{}}',
            created TEXT {_C} NOT NULL,
            PRIMARY KEY (repository, digest)
        )""",
        "CREATE INDEX manifests_by_subject ON manifests (repository, subject, digest) WHERE subject IS NOT NULL",
        f"""CREATE TABLE tags (
            repository TEXT {_C} NOT NULL,
            tag TEXT {_C} NOT NULL,
            digest TEXT {_C} NOT NULL,
            updated TEXT {_C} NOT NULL,
            PRIMARY KEY (repository, tag),
            FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
        )""",
        "CREATE INDEX tags_by_digest ON tags (repository, digest)",
        f"""CREATE TABLE blobs (
            repository TEXT {_C} NOT NULL,
            digest TEXT {_C} NOT NULL,
            size BIGINT NOT NULL,
            PRIMARY KEY (repository, digest)
        )""",
    ),
    2: (
        f"""CREATE TABLE refs (
            repository TEXT {_C} NOT NULL,
            manifest TEXT {_C} NOT NULL,
            digest TEXT {_C} NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
            PRIMARY KEY (repository, manifest, digest),
            FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
        )""",
        "CREATE INDEX refs_by_digest ON refs (digest, repository)",
        "ALTER TABLE manifests ADD COLUMN refs_known INTEGER NOT NULL DEFAULT 1",
        "UPDATE manifests SET refs_known = 0",
        f"ALTER TABLE manifests ADD COLUMN accessed TEXT {_C}",
        f"ALTER TABLE blobs ADD COLUMN linked TEXT {_C} NOT NULL DEFAULT ''",
        """UPDATE blobs SET linked = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
        f"""CREATE TABLE released (
            digest TEXT {_C} NOT NULL PRIMARY KEY,
            at TEXT {_C} NOT NULL
        )""",
        f"""CREATE TABLE pending (
            digest TEXT {_C} NOT NULL,
            token TEXT {_C} NOT NULL,
            until TEXT {_C} NOT NULL,
            PRIMARY KEY (digest, token)
        )""",
        # SQLite's instr (the admin API's blob search), which PostgreSQL spells strpos.
        "CREATE FUNCTION instr(text, text) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT strpos($1, $2)'",
    ),
    3: (
        f"""CREATE TABLE replication (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            remote TEXT {_C} NOT NULL,
            repository TEXT {_C} NOT NULL,
            tag TEXT {_C} NOT NULL,
            digest TEXT {_C} NOT NULL,
            queued TEXT {_C} NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT {_C} NOT NULL,
            last_error TEXT,
            leased_by TEXT {_C},
            lease_until TEXT {_C}
        )""",
        "CREATE INDEX replication_by_repository ON replication (remote, repository, id)",
    ),
}


# What translate rewrites: no placeholder in quoted text or a cast (::), but every % doubled
# (psycopg reads one anywhere, even in a string literal, as a placeholder's start).
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|::|\?|:(\w+)|%""")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``sql`` with sqlite3's placeholders (``?``, ``:name``) in psycopg's (``%s``, ``%(name)s``)."""
    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1):
            return f"%({match.group(1)})s"
        return text.replace("%", "%%")

    return _TOKEN.sub(token, sql)


class _PgDb:
    """A psycopg connection in one transaction, read as a ``Db``."""

    _names = itertools.count()

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self._connection.execute(translate(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        cursor = self._connection.cursor()
        cursor.executemany(translate(sql), parameters)
        return cursor

    def stream(self, sql: str, parameters: Any = ()) -> psycopg.ServerCursor[Any]:
        cursor = self._connection.cursor(name=f"stream{next(self._names)}")
        cursor.execute(translate(sql), parameters)
        return cursor


class PostgresIndexStore(IndexStore):
    """The index's data in the PostgreSQL database ``dsn`` (libpq's URL: its user, host, port,
    database and parameters; a password there, in PGPASSWORD or a ~/.pgpass / PGPASSFILE)."""

    def __init__(self, dsn: str, *, spool_dir: str | Path, pool_size: int = POOL_SIZE) -> None:
        self.dsn = dsn
        self.spool_dir = Path(spool_dir)
        self.pool_size = pool_size
        self._connections: _Connections | None = None
        self._limiter = trio.CapacityLimiter(pool_size)
        self._down = False  # the last call failed for the database (logged once)
        self._opening = trio.Lock()

    def describe(self) -> str:
        return f"PostgreSQL {redact_url(self.dsn)}"

    async def open(self) -> PostgresIndexStore:
        """Connect (UNAVAILABLE if the database does not answer) and bring the schema up to
        date, one node at a time."""
        async with self._opening:
            if self._connections is None:
                connections = _Connections(self.dsn)
                try:
                    await self._run(functools.partial(self._transaction, connections, _BEGIN_MIGRATION, _migrate))
                except BaseException:
                    connections.close()
                    raise
                self._connections = connections
        return self

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            if self._connections is not None:
                connections, self._connections = self._connections, None
                # Every call holds a token until its transaction is over: take them all.
                borrowers = [object() for _ in range(self.pool_size)]
                for borrower in borrowers:
                    await self._limiter.acquire_on_behalf_of(borrower)
                try:
                    connections.close()
                finally:
                    for borrower in borrowers:
                        self._limiter.release_on_behalf_of(borrower)

    @staticmethod
    def _transaction(connections: _Connections, begin: str, work: Callable[[Db], T]) -> T:
        """``work`` in one transaction, in this worker thread; again on a conflict, or once on a
        new connection when the idle one was dropped by the database (a restart) before COMMIT."""
        for attempt in itertools.count(1):
            connection = connections.get()
            committing = False
            try:
                connection.execute(begin)
                result = work(_PgDb(connection))
                committing = True
                connection.execute("COMMIT")
                return result
            except _CONFLICTS:
                # A serialization failure or deadlock (even at COMMIT): nothing was written.
                _rollback(connection)
                if attempt >= CONFLICT_RETRIES:
                    raise
                # Apart from the writers it collided with: a random, growing pause (at most 50 ms).
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
            except psycopg.OperationalError:
                if not connection.broken or committing or not connections.was_idle(connection):
                    _rollback(connection)
                    raise
                connections.drop_idle()  # from before the restart too
            except BaseException:
                _rollback(connection)
                raise
            finally:
                connections.put(connection)
        raise AssertionError("unreachable")

    async def _run(self, call: Callable[[], T]) -> T:
        """``call`` in a worker thread (not abandoned on cancellation: a transaction ends first);
        the database's failures as SwarmregErrors."""
        try:
            result = await trio.to_thread.run_sync(call, limiter=self._limiter)
        except _CONFLICTS:
            raise SwarmregError(UNAVAILABLE, "the index database is too busy: retry") from None
        except psycopg.errors.DiskFull:
            raise SwarmregError(STORAGE_FULL, "writing the index: the database's disk is full") from None
        except psycopg.DataError:  # a value the callers' checks let through and PostgreSQL refuses
            raise SwarmregError(BAD_REQUEST, "a value the index database cannot hold") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if not self._down:
                self._down = True
                log.warning("index database %s failed: %s", self.describe(), self._scrub(error))
            raise SwarmregError(UNAVAILABLE, "the index database is unavailable") from None
        if self._down:
            self._down = False
            log.info("index database %s answers again", self.describe())
        return result

    def _scrub(self, error: BaseException) -> str:
        """The error's text on one line, without the password should libpq ever quote it."""
        text = " ".join(str(error).split()) or type(error).__name__
        password = urlsplit(self.dsn).password
        return text.replace(password, REDACTED) if password else text

    async def _call(self, begin: str, work: Callable[[Db], T]) -> T:
        connections = self._connections
        if connections is None:
            raise RuntimeError("the index store is not open")
        return await self._run(functools.partial(self._transaction, connections, begin, work))

    async def read(self, work: Callable[[Db], T]) -> T:
        return await self._call(_BEGIN_READ, work)

    async def write(self, work: Callable[[Db], T]) -> T:
        """As IndexStore.write, SERIALIZABLE: ``work`` runs again when another writer's
        transaction conflicted with it."""
        return await self._call(_BEGIN_WRITE, work)


class _Connections:
    """The store's connections to the database: idle ones are reused (the last one first); when
    none is idle, a new one is made in the calling thread. No background thread: while the
    database is down each request tries once (refused at once, or after connect_timeout), and
    the first after it returns connects. The store's limiter bounds how many are open."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        given = conninfo_to_dict(dsn)
        self._options: dict[str, Any] = {"autocommit": True, **{
            key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given}}
        self._idle: list[psycopg.Connection[Any]] = []
        self._reused: set[int] = set()  # ids of the connections given out from _idle
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._closed:  # a call that waited for a thread while the store closed
                raise RuntimeError("the index store is not open")
            if self._idle:
                connection = self._idle.pop()
                self._reused.add(id(connection))
                return connection
        return psycopg.connect(self.dsn, **self._options)

    def was_idle(self, connection: psycopg.Connection[Any]) -> bool:
        """Whether ``connection`` had waited idle (it may have died meanwhile), not just been made."""
        return id(connection) in self._reused

    def put(self, connection: psycopg.Connection[Any]) -> None:
        """Keep ``connection`` for the next call, unless it is broken or was left in a transaction."""
        with self._lock:
            self._reused.discard(id(connection))
            if not connection.broken and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def drop_idle(self) -> None:
        """Close the idle connections (the database dropped one: it dropped them all)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.drop_idle()


def _migrate(db: Db) -> int:
    db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
    return migrate(db, MIGRATIONS)


def _rollback(connection: psycopg.Connection[Any]) -> None:
    """End the connection's transaction if it is still open (a broken one is dropped anyway)."""
    if connection.broken or connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        pass  # _Connections.put closes a connection left in a transaction
