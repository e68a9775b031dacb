"""The index's side of garbage collection: the mark, the backfill of legacy manifests' references,
and the link renewals a push makes (docs/gc.md has the argument they serve).

The mark is one write transaction (a consistent snapshot): it removes the blob links older than
the grace period that no manifest of their repository references, then writes the live set (every
manifest's digest, every reference, every remaining link) to an unnamed temporary file beside the
database, which the route then streams: the index never holds the live set in memory, and the
database lock is not held while the origin reads it.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import IO, Any, Protocol

import attrs
from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.authz import GC_MARKERS, ClusterGuard
from swarmreg.digest import Digest
from swarmreg.errors import (
    BAD_REQUEST,
    BLOB_UNKNOWN,
    GC_REFS_UNKNOWN,
    MANIFEST_UNKNOWN,
    STORAGE_FULL,
    SwarmregError,
    is_storage_full,
)
from swarmreg.http.body import StreamedBody
from swarmreg.http.identity import guard_writes
from swarmreg.http.responses import empty_response, json_response
from swarmreg.index.store import Cursor, Db, IndexStore, stream
from swarmreg.index.validate import check_body, parse_digest, parse_page_size, query_text, validate_repository
from swarmreg.index.wire import (
    BLOB_SIZE,
    BLOBS,
    GC_DRY_RUN,
    GC_GRACE,
    GC_LINKS_KEPT,
    GC_LINKS_REMOVED,
    GC_LIVE,
    GC_MARK,
    GC_REFS,
    GC_RELEASED,
    GC_UNKNOWN,
    MOUNT,
    MOUNT_FROM,
    RENEW,
)
from swarmreg.index.wire import REPOSITORY_ROUTE as REPOSITORY
from swarmreg.store.files import FileBody

log = logging.getLogger(__name__)

# A link is stale when it is older than the cutoff and no manifest of its repository names it.
_STALE = """linked < :cutoff AND NOT EXISTS (
    SELECT 1 FROM refs WHERE refs.digest = blobs.digest AND refs.repository = blobs.repository)"""
# What a push is storing at the origin right now (noted before its commit: IndexStore.note_pending).
_PENDING = "SELECT digest FROM pending WHERE until > :now"
_LIVE = f"""SELECT digest FROM manifests UNION SELECT digest FROM refs
            UNION SELECT digest FROM blobs WHERE NOT ({_STALE}) UNION {_PENDING}"""
# Every link counts (none could be removed: the index's disk is full).
_LIVE_ALL = f"""SELECT digest FROM manifests UNION SELECT digest FROM refs UNION SELECT digest FROM blobs
                UNION {_PENDING}"""
# Digests a manifest's delete released that the live set does not hold, with their release time:
# the origin may sweep their files without waiting out the grace period (docs/gc.md). Spooled
# after the live set as "@<time> <digest>".
_RELEASED = "SELECT digest, at FROM released WHERE digest NOT IN ({live})"
# Manifests listed per page of GC_UNKNOWN when the request names no n.
UNKNOWN_PAGE = 1000


def link_time(when: datetime) -> str:
    """``when`` in the format of ``blobs.linked`` (which sorts as text)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class Mark:
    """A mark's result: the live set in ``spool`` (one digest a line, read from its start)."""

    spool: IO[bytes]
    live: int
    links_removed: int
    released: int = 0


def mark(db: Db, cutoff: str, *, dry_run: bool, spool_dir: str, keep_links: bool = False) -> Mark:
    """The mark, in the caller's write transaction: GC_REFS_UNKNOWN while a manifest's references
    are unknown (nothing changes), else remove the stale links (count them only, with
    ``dry_run``) and spool the live set, then the released digests it does not hold. With
    ``keep_links`` (a read transaction: the disk has no room for the removal) no link is removed
    and every link is live."""
    if db.execute("SELECT EXISTS (SELECT 1 FROM manifests WHERE refs_known = 0)").fetchone()[0]:
        raise SwarmregError(GC_REFS_UNKNOWN, "some manifests were recorded before their references were: "
                            "the collector reads them first")
    args = {"cutoff": cutoff, "now": link_time(datetime.now(UTC))}
    if keep_links:
        removed = 0
    elif dry_run:
        removed = db.execute(f"SELECT count(*) FROM blobs WHERE {_STALE}", args).fetchone()[0]
    else:
        removed = db.execute(f"DELETE FROM blobs WHERE {_STALE}", args).rowcount
    live_query = _LIVE_ALL if keep_links else _LIVE
    if not dry_run and not keep_links:
        # Releases older than the grace period: that rule covers them; notes of dead pushes.
        db.execute("DELETE FROM released WHERE at < :cutoff", args)
        db.execute("DELETE FROM pending WHERE until <= :now", args)
    spool = _Spool(spool_dir)
    try:
        live = spool.lines(stream(db, live_query, args), lambda row: f"{row[0]}\n")
        released = spool.lines(stream(db, _RELEASED.format(live=live_query), args),
                               lambda row: f"@{row[1]} {row[0]}\n")
        return Mark(spool.done(), live, removed, released)
    except BaseException:
        spool.file.close()
        raise


class _Spool:
    """The live set on its way out: an unnamed file beside the database (gone when closed, or with
    the process), unbuffered; memory when the disk has no room for it (a full disk is when a
    collection is needed most: about 70 bytes a digest, rather than no collection at all)."""

    def __init__(self, directory: str) -> None:
        self.committed = 0  # bytes written whole
        try:
            self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory, buffering=0)
        except OSError as error:
            if not is_storage_full(error):
                raise
            self.file = io.BytesIO()

    def lines(self, cursor: Cursor, line: Callable[[Any], str]) -> int:
        """Write a line per row of ``cursor``; how many."""
        count = 0
        while rows := cursor.fetchmany(10_000):
            self.write("".join(map(line, rows)).encode())
            count += len(rows)
        return count

    def write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[self.file.write(view) or 0:]
        except OSError as error:
            if not is_storage_full(error) or isinstance(self.file, io.BytesIO):
                raise
            self.file.seek(0)
            memory = io.BytesIO(self.file.read(self.committed))
            self.file.close()
            memory.seek(0, io.SEEK_END)
            memory.write(data)
            self.file = memory
        self.committed += len(data)

    def done(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file


def unknown_manifests(db: Db, after: tuple[str, str], n: int) -> list[tuple[str, str, str]]:
    """Up to ``n`` (repository, digest, media type) of manifests with unknown references, after ``after``."""
    return db.execute("""SELECT repository, digest, media_type FROM manifests
                         WHERE refs_known = 0 AND (repository, digest) > (?, ?)
                         ORDER BY repository, digest LIMIT ?""", (*after, n)).fetchall()


def record_references(db: Db, repository: str, digest: Digest, blobs: Sequence[Digest],
                      children: Sequence[Digest]) -> bool:
    """Record a legacy manifest's references (read from its bytes); False if it is gone."""
    if db.execute("UPDATE manifests SET refs_known = 1 WHERE repository = ? AND digest = ?",
                  (repository, str(digest))).rowcount == 0:
        return False
    db.execute("DELETE FROM refs WHERE repository = ? AND manifest = ?", (repository, str(digest)))
    db.executemany("INSERT INTO refs (repository, manifest, digest, kind) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT DO NOTHING",
                   [(repository, str(digest), str(d), kind)
                    for kind, named in (("blob", blobs), ("manifest", children)) for d in named])
    return True


def renew_link(db: Db, repository: str, digest: Digest) -> int | None:
    """Renew the link if it exists (never make one): its size, or None."""
    if db.execute("UPDATE blobs SET linked = ? WHERE repository = ? AND digest = ?",
                  (link_time(datetime.now(UTC)), repository, str(digest))).rowcount == 0:
        return None
    size: int = db.execute("SELECT size FROM blobs WHERE repository = ? AND digest = ?",
                           (repository, str(digest))).fetchone()[0]
    return size


def mount_link(db: Db, source: str, target: str, digest: Digest) -> int | None:
    """Link the blob in ``target`` if ``source`` links it (checked in the same transaction): its size, or None."""
    row = db.execute("SELECT size FROM blobs WHERE repository = ? AND digest = ?", (source, str(digest))).fetchone()
    if row is None:
        return None
    db.execute("""INSERT INTO blobs (repository, digest, size, linked) VALUES (?, ?, ?, ?)
                  ON CONFLICT (repository, digest) DO UPDATE SET size = excluded.size, linked = excluded.linked""",
               (target, str(digest), row[0], link_time(datetime.now(UTC))))
    size: int = row[0]
    return size


class BlobReads(Protocol):
    """The index's blob lookups (the store, or the pull-through that links upstream blobs on a miss)."""

    async def blob_size(self, repository: str, digest: Digest) -> int | None: ...


def _grace() -> float:
    text = request.args.get(GC_GRACE, "")
    try:
        grace = float(text)
    except ValueError:
        grace = -1.0
    if not 0 <= grace < 10 ** 9:
        raise SwarmregError(BAD_REQUEST, f"{GC_GRACE} must be a number of seconds", {GC_GRACE: text[:100]})
    return grace


def is_gc_path() -> bool:
    """Whether the request is one of the collector's (guarded for GC_MARKERS, not INDEX_WRITERS)."""
    return request.path.startswith("/gc/")


def add_gc_routes(app: QuartTrio, store: IndexStore, reads: BlobReads, guard: ClusterGuard,
                  read_json: Callable[[], Any]) -> None:
    """The collector's routes (GC_MARK, GC_UNKNOWN, GC_REFS: for the origin role when ``guard``
    checks writers) and a push's link renewals (RENEW, MOUNT: the proxy's, guarded as the index's
    other writes). ``read_json`` reads a request's JSON body."""
    guard_writes(app, guard, GC_MARKERS, "garbage collection at the index", is_gc_path)
    spool_dir = str(store.spool_dir)

    @app.post(GC_MARK)
    async def gc_mark() -> Response:
        grace = _grace()
        dry_run = request.args.get(GC_DRY_RUN, "false") == "true"
        cutoff = link_time(datetime.now(UTC) - timedelta(seconds=grace))
        work = partial(mark, cutoff=cutoff, dry_run=dry_run, spool_dir=spool_dir)
        headers = {}
        try:
            marked = await store.write(work)
        except SwarmregError as error:
            if error.code is not STORAGE_FULL:
                raise
            # No room to remove links: a mark that keeps them all still frees what no link holds.
            log.warning("garbage collection: the index's disk is full: stale links are kept this time")
            marked = await store.read(partial(work, keep_links=True))
            headers[GC_LINKS_KEPT] = "disk full"
        content: StreamedBody | bytes
        if isinstance(marked.spool, io.BytesIO):
            content = marked.spool.getvalue()
            size = len(content)
        else:
            size = os.fstat(marked.spool.fileno()).st_size
            content = StreamedBody(FileBody(os.dup(marked.spool.fileno()), 0, size, 1 << 20))
        marked.spool.close()
        response = Response(content, content_type="text/plain",
                            headers={GC_LIVE: str(marked.live), GC_LINKS_REMOVED: str(marked.links_removed),
                                     GC_RELEASED: str(marked.released), **headers})
        response.headers["Content-Length"] = str(size)
        return response

    @app.get(GC_UNKNOWN)
    async def gc_unknown() -> Response:
        n = parse_page_size(request.args.get("n")) or UNKNOWN_PAGE
        repository, _, digest = (query_text(request.args.get("last"), "last") or "").rpartition("@")
        rows = await store.read(partial(unknown_manifests, after=(repository, digest), n=n))
        return json_response({"manifests": [{"repository": r, "digest": d, "media_type": m} for r, d, m in rows]})

    @app.post(GC_REFS)
    async def gc_refs() -> Response:
        body = check_body(await read_json(), {"repository", "digest", "blobs", "children"}, set())
        repository, digest = validate_repository(body["repository"]), parse_digest(body["digest"])
        blobs, children = (_digest_list(body[field], field) for field in ("blobs", "children"))
        if not await store.write(partial(record_references, repository=repository, digest=digest,
                                         blobs=blobs, children=children)):
            raise SwarmregError(MANIFEST_UNKNOWN, detail={"repository": repository, "digest": str(digest)})
        return empty_response(204)

    @app.post(f"{REPOSITORY}/{BLOBS}/<digest:digest>{RENEW}")
    async def renew(repository: str, digest: str) -> Response:
        validate_repository(repository)
        parsed = parse_digest(digest)
        size = await store.write(partial(renew_link, repository=repository, digest=parsed))
        if size is None:  # an upstream repository's blob is linked on its first lookup
            size = await reads.blob_size(repository, parsed)
        return _linked(repository, parsed, size)

    @app.post(f"{REPOSITORY}/{BLOBS}/<digest:digest>{MOUNT}")
    async def mount(repository: str, digest: str) -> Response:
        validate_repository(repository)
        parsed = parse_digest(digest)
        source = validate_repository(request.args.get(MOUNT_FROM, ""))
        await reads.blob_size(source, parsed)  # an upstream repository's blob: linked there first
        size = await store.write(partial(mount_link, source=source, target=repository, digest=parsed))
        return _linked(repository, parsed, size)


def _linked(repository: str, digest: Digest, size: int | None) -> Response:
    if size is None:
        raise SwarmregError(BLOB_UNKNOWN, detail={"repository": repository, "digest": str(digest)})
    return empty_response(200, {BLOB_SIZE: str(size)})


def _digest_list(value: Any, field: str) -> list[Digest]:
    if not isinstance(value, list):
        raise SwarmregError(BAD_REQUEST, f"{field} must be a list of digests")
    return [parse_digest(item, field) for item in value]

