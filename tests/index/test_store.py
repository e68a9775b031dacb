"""The index's stores, each test on SQLite and on a real PostgreSQL: every operation, pagination,
concurrency (two stores on one database: two index nodes), reopening."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import trio

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, SwarmregError
from swarmreg.index.gc import link_time, mark
from swarmreg.index.postgres_store import translate
from swarmreg.index.sqlite_store import SqliteIndexStore
from swarmreg.index.store import SCHEMA_VERSION, IndexStore, ManifestRecord, Page, SchemaError
from tests.index.helpers import MANIFEST, digest

SIGNATURE = "application/vnd.example.signature"
SBOM = "application/vnd.example.sbom"


async def put_manifest(store: IndexStore, repository: str, n: object, **fields: object) -> Digest:
    d = digest(n)
    await store.put_manifest(repository, d, **{"media_type": MANIFEST, "size": 100, **fields})
    return d


async def tags_in(store: IndexStore, repository: str, n: int | None, last: str | None = None) -> Page:
    return await store.list_tags(repository, n, last)


# --- the database --------------------------------------------------------------------------------

async def test_the_schema_is_created(store: IndexStore) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    for query in ("SELECT repository, digest, media_type, size, artifact_type, subject, annotations, created, "
                  "refs_known, accessed FROM manifests", "SELECT repository, tag, digest, updated FROM tags",
                  "SELECT repository, digest, size, linked FROM blobs", "SELECT repository, manifest, digest, kind "
                  "FROM refs", "SELECT digest, at FROM released", "SELECT digest, token, until FROM pending"):
        assert await store.read(lambda db, query=query: db.execute(query).fetchall()) == []


async def test_the_sqlite_file_is_in_wal_mode(sqlite_store: SqliteIndexStore, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "index.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1] for row in db.execute("PRAGMA table_info(manifests)")}
        assert columns == {"repository", "digest", "media_type", "size", "artifact_type", "subject",
                           "annotations", "created", "refs_known", "accessed"}
    finally:
        db.close()


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    async with SqliteIndexStore(tmp_path / "deep" / "er" / "index.db") as store:
        assert await store.catalog() == Page([])
    assert (tmp_path / "deep" / "er" / "index.db").is_file()


async def test_reopening_keeps_everything(new_store: Callable[[], IndexStore]) -> None:
    async with new_store() as store:
        m = await put_manifest(store, "library/app", "m", annotations={"a": "b"}, artifact_type=SBOM,
                               subject=digest("s"))
        await store.put_tag("library/app", "v1", m)
        await store.link_blob("library/app", digest("layer"), 1234)
        before = await store.get_manifest("library/app", m)
    async with new_store() as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.get_manifest("library/app", m) == before
        assert await store.get_tag("library/app", "v1") == m
        assert await store.blob_size("library/app", digest("layer")) == 1234
        assert await store.referrers("library/app", digest("s")) == [before]
        assert (await store.catalog()).items == ["library/app"]


async def test_a_newer_schema_is_refused(new_store: Callable[[], IndexStore]) -> None:
    async with new_store() as store:
        await store.write(lambda db: db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,)))
    with pytest.raises(SchemaError, match="newer"):
        await new_store().open()


async def test_a_closed_store_refuses_calls(new_store: Callable[[], IndexStore]) -> None:
    store = new_store()
    with pytest.raises(RuntimeError, match="not open"):
        await store.catalog()
    await store.open()
    await store.aclose()
    await store.aclose()  # twice is fine
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_tag("a", "b")


async def test_without_fsync_the_store_works_the_same(tmp_path: Path) -> None:
    async with SqliteIndexStore(tmp_path / "index.db", fsync=False) as store:
        m = await put_manifest(store, "a", 1)
        await store.put_tag("a", "t", m)
        assert await store.get_tag("a", "t") == m


# --- tags ---------------------------------------------------------------------------------------------

async def test_tag_needs_its_manifest_in_the_same_repository(store: IndexStore) -> None:
    m = await put_manifest(store, "one", 1)
    with pytest.raises(SwarmregError) as info:
        await store.put_tag("two", "latest", m)
    assert info.value.code is MANIFEST_UNKNOWN
    with pytest.raises(SwarmregError):
        await store.put_tag("one", "latest", digest("other"))
    assert await store.get_tag("two", "latest") is None
    assert await store.get_tag("one", "latest") is None


async def test_tag_put_get_move_delete(store: IndexStore) -> None:
    m1, m2 = await put_manifest(store, "r", 1), await put_manifest(store, "r", 2)
    await store.put_tag("r", "latest", m1)
    assert await store.get_tag("r", "latest") == m1
    await store.put_tag("r", "latest", m1)  # again: nothing changes
    await store.put_tag("r", "latest", m2)
    assert await store.get_tag("r", "latest") == m2
    assert await store.delete_tag("r", "latest") is True
    assert await store.delete_tag("r", "latest") is False
    assert await store.get_tag("r", "latest") is None
    assert await store.get_manifest("r", m2) is not None, "deleting a tag keeps its manifest"


async def test_tags_are_listed_in_byte_order(store: IndexStore) -> None:
    m = await put_manifest(store, "r", 1)
    tags = ["latest", "Latest", "v1.0", "v1-0", "v1_0", "_x", "1", "10", "9", "a", "A", "Z"]
    for tag in tags:
        await store.put_tag("r", tag, m)
    page = await tags_in(store, "r", None)
    assert page.items == sorted(tags) == sorted(tags, key=str.encode)
    assert page.next_last is None


async def test_tag_pagination_edges(store: IndexStore) -> None:
    m = await put_manifest(store, "r", 1)
    tags = [f"t{i:02}" for i in range(7)]
    for tag in reversed(tags):
        await store.put_tag("r", tag, m)
    assert await tags_in(store, "r", 0) == Page([])
    assert await tags_in(store, "r", 0, "t03") == Page([])
    assert await tags_in(store, "r", 100) == Page(tags), "n larger than the count: everything, no next page"
    assert await tags_in(store, "r", 7) == Page(tags), "n equal to the count: no next page"
    assert await tags_in(store, "r", 6) == Page(tags[:6], "t05")
    assert await tags_in(store, "r", 1) == Page(["t00"], "t00")
    assert await tags_in(store, "r", 3, "t05") == Page(["t06"])
    assert await tags_in(store, "r", 3, "t06") == Page([])
    assert await tags_in(store, "r", 3, "zzz") == Page([]), "last beyond the end"
    assert await tags_in(store, "r", None, "t03") == Page(tags[4:])
    assert await tags_in(store, "r", 2, "t025") == Page(["t03", "t04"], "t04"), "last need not be a tag"
    assert await tags_in(store, "r", 2, "") == Page(["t00", "t01"], "t01")
    # Walking the pages gives every tag once.
    seen, last = [], None
    while True:
        page = await tags_in(store, "r", 3, last)
        seen += page.items
        if page.next_last is None:
            break
        last = page.next_last
    assert seen == tags


async def test_tags_of_an_unknown_repository(store: IndexStore) -> None:
    for n in (None, 0, 5):
        with pytest.raises(SwarmregError) as info:
            await tags_in(store, "nobody/here", n)
        assert info.value.code is NAME_UNKNOWN
        assert info.value.detail == {"name": "nobody/here"}


async def test_a_repository_without_tags_lists_none(store: IndexStore) -> None:
    await put_manifest(store, "untagged", 1)
    await store.link_blob("blobs/only", digest("b"), 1)
    assert await tags_in(store, "untagged", None) == Page([])
    assert await tags_in(store, "blobs/only", 10) == Page([])


async def test_repositories_are_separate(store: IndexStore) -> None:
    m = await put_manifest(store, "a", 1)
    await put_manifest(store, "a/b", 1)
    await store.put_tag("a", "x", m)
    await store.put_tag("a/b", "y", m)
    assert (await tags_in(store, "a", None)).items == ["x"]
    assert (await tags_in(store, "a/b", None)).items == ["y"]
    await store.delete_manifest("a", m)
    assert await store.get_tag("a/b", "y") == m


# --- the catalog ----------------------------------------------------------------------------------

async def test_catalog_lists_repositories_with_manifests_or_blobs(store: IndexStore) -> None:
    assert await store.catalog() == Page([])
    await put_manifest(store, "library/b", 1)
    await put_manifest(store, "library/b", 2)
    await store.link_blob("library/a", digest("x"), 1)
    await store.link_blob("library/b", digest("x"), 1)
    await put_manifest(store, "Z-is-not-valid-but-sorts-first", 1)
    await put_manifest(store, "library", 1)
    await put_manifest(store, "library-x", 1)
    assert (await store.catalog()).items == [
        "Z-is-not-valid-but-sorts-first", "library", "library-x", "library/a", "library/b"]
    await store.unlink_blob("library/a", digest("x"))
    assert "library/a" not in (await store.catalog()).items


async def test_catalog_pagination_edges(store: IndexStore) -> None:
    names = [f"repo/{i}" for i in range(5)]
    for name in names:
        await store.link_blob(name, digest(1), 1)
    assert await store.catalog(0) == Page([])
    assert await store.catalog(5) == Page(names)
    assert await store.catalog(50) == Page(names)
    assert await store.catalog(2) == Page(names[:2], "repo/1")
    assert await store.catalog(2, "repo/1") == Page(names[2:4], "repo/3")
    assert await store.catalog(2, "repo/3") == Page(names[4:])
    assert await store.catalog(2, "repo/4") == Page([])
    assert await store.catalog(None, "zzz") == Page([])
    assert await store.catalog(None, "repo/2") == Page(names[3:])


# --- manifests ------------------------------------------------------------------------------------

async def test_manifest_round_trip(store: IndexStore) -> None:
    d = await put_manifest(store, "r/x", "m", size=512, artifact_type=SIGNATURE, subject=digest("s"),
                           annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": "v"})
    record = await store.get_manifest("r/x", d)
    assert isinstance(record, ManifestRecord)
    assert (record.repository, record.digest, record.media_type, record.size) == ("r/x", d, MANIFEST, 512)
    assert (record.artifact_type, record.subject) == (SIGNATURE, digest("s"))
    assert record.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": "v"}
    assert record.created.endswith("Z")
    assert record.to_json() == {
        "digest": str(d), "media_type": MANIFEST, "size": 512, "artifact_type": SIGNATURE,
        "subject": str(digest("s")), "annotations": dict(record.annotations), "created": record.created}
    assert await store.get_manifest("r", d) is None
    assert await store.get_manifest("r/x", digest("other")) is None


async def test_manifest_defaults(store: IndexStore) -> None:
    d = await put_manifest(store, "r", 1)
    record = await store.get_manifest("r", d)
    assert record is not None
    assert (record.artifact_type, record.subject, record.annotations) == (None, None, {})


async def test_putting_a_manifest_again_updates_it_and_keeps_its_tags(store: IndexStore) -> None:
    d = await put_manifest(store, "r", 1, size=10)
    await store.put_tag("r", "v1", d)
    first = await store.get_manifest("r", d)
    await trio.sleep(0.01)
    await put_manifest(store, "r", 1, size=11, annotations={"a": "b"})
    second = await store.get_manifest("r", d)
    assert first is not None and second is not None
    assert (second.size, second.annotations, second.created) == (11, {"a": "b"}, first.created)
    assert await store.get_tag("r", "v1") == d


async def test_deleting_a_manifest_deletes_its_tags_only(store: IndexStore) -> None:
    m1, m2 = await put_manifest(store, "r", 1), await put_manifest(store, "r", 2)
    for tag in ("b", "a", "c"):
        await store.put_tag("r", tag, m1)
    await store.put_tag("r", "keep", m2)
    assert await store.delete_manifest("r", m1) == ["a", "b", "c"]
    assert await store.get_manifest("r", m1) is None
    assert (await tags_in(store, "r", None)).items == ["keep"]
    assert await store.delete_manifest("r", m1) is None
    assert await store.delete_manifest("r", m2) == ["keep"]
    with pytest.raises(SwarmregError) as info:
        await tags_in(store, "r", None)
    assert info.value.code is NAME_UNKNOWN, "nothing left: the repository is gone"


async def test_referrers(store: IndexStore) -> None:
    subject = await put_manifest(store, "r", "image")
    signatures = [await put_manifest(store, "r", f"sig{i}", artifact_type=SIGNATURE, subject=subject,
                                     annotations={"i": str(i)}) for i in range(3)]
    sbom = await put_manifest(store, "r", "sbom", artifact_type=SBOM, subject=subject, size=7)
    untyped = await put_manifest(store, "r", "untyped", subject=subject)
    await put_manifest(store, "r", "elsewhere", artifact_type=SIGNATURE, subject=digest("other"))
    await put_manifest(store, "other/repo", "sig-other", artifact_type=SIGNATURE, subject=subject)

    everything = await store.referrers("r", subject)
    assert [r.digest for r in everything] == sorted([*signatures, sbom, untyped], key=str)
    assert [r.digest for r in await store.referrers("r", subject, SIGNATURE)] == sorted(signatures, key=str)
    sboms = await store.referrers("r", subject, SBOM)
    assert [r.descriptor() for r in sboms] == [
        {"mediaType": MANIFEST, "digest": str(sbom), "size": 7, "artifactType": SBOM, "annotations": {}}]
    assert await store.referrers("r", subject, "application/unknown") == []
    assert await store.referrers("r", digest("nothing")) == []
    assert await store.referrers("unknown/repo", subject) == []


# --- blob links -----------------------------------------------------------------------------------

async def test_blob_links(store: IndexStore) -> None:
    b = digest("layer")
    assert await store.blob_size("r", b) is None
    await store.link_blob("r", b, 42)
    assert await store.blob_size("r", b) == 42
    assert await store.blob_size("r/other", b) is None, "a link is per repository"
    await store.link_blob("r", b, 42)  # again: fine
    await store.link_blob("r", digest("empty"), 0)
    assert await store.blob_size("r", digest("empty")) == 0
    assert await store.unlink_blob("r", b) is True
    assert await store.unlink_blob("r", b) is False
    assert await store.blob_size("r", b) is None


# --- concurrency ----------------------------------------------------------------------------------

async def test_concurrent_writers(store: IndexStore) -> None:
    writers, each = 12, 15

    async def writer(w: int) -> None:
        repository = f"team{w % 3}/app"
        for i in range(each):
            m = await put_manifest(store, repository, f"{w}-{i}", size=i)
            await store.put_tag(repository, f"w{w:02}-{i:02}", m)
            await store.link_blob(repository, digest(f"blob{w}-{i}"), i)
            assert await store.get_tag(repository, f"w{w:02}-{i:02}") == m

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    assert (await store.catalog()).items == ["team0/app", "team1/app", "team2/app"]
    total = 0
    for repository in ("team0/app", "team1/app", "team2/app"):
        tags = (await tags_in(store, repository, None)).items
        assert tags == sorted(tags)
        total += len(tags)
    assert total == writers * each
    assert await store.blob_size("team1/app", digest("blob4-14")) == 14


async def test_concurrent_writers_to_one_tag_leave_one_winner(store: IndexStore) -> None:
    digests = [await put_manifest(store, "r", i) for i in range(10)]
    async with trio.open_nursery() as nursery:
        for d in digests:
            nursery.start_soon(store.put_tag, "r", "latest", d)
    assert await store.get_tag("r", "latest") in digests
    assert (await tags_in(store, "r", None)).items == ["latest"]


async def test_cancelled_callers_leave_the_store_usable(store: IndexStore) -> None:
    with trio.move_on_after(0.05):
        async with trio.open_nursery() as nursery:
            for w in range(8):
                async def writer(w: int = w) -> None:
                    for i in range(10_000):
                        await store.link_blob("r", digest(f"{w}-{i}"), i)
                nursery.start_soon(writer)
    await store.link_blob("r", digest("after"), 1)
    assert await store.blob_size("r", digest("after")) == 1


# --- two stores on one database (two index nodes) ----------------------------------------------

async def test_what_one_node_writes_the_other_reads(new_store: Callable[[], IndexStore]) -> None:
    async with new_store() as a, new_store() as b:
        m = await put_manifest(a, "r", 1)
        await a.put_tag("r", "v1", m)
        assert await b.get_tag("r", "v1") == m
        await b.link_blob("r", digest("layer"), 7)
        assert await a.blob_size("r", digest("layer")) == 7
        assert await b.delete_manifest("r", m) == ["v1"]
        assert await a.get_tag("r", "v1") is None
        assert (await a.catalog()).items == (await b.catalog()).items == ["r"]


async def test_two_nodes_racing_on_the_same_manifests_and_tag_agree(new_store: Callable[[], IndexStore]) -> None:
    async with new_store() as a, new_store() as b:
        layers = [digest(f"layer{i}") for i in range(4)]

        async def push(node: IndexStore, i: int) -> None:
            for layer in layers:
                await node.link_blob("r", layer, 10)
            await put_manifest(node, "r", i % 5, blobs=layers[i % 4:], size=i % 5)
            await node.put_tag("r", "latest", digest(i % 5))
            await node.put_tag("r", f"t{i % 5}", digest(i % 5))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(push, a if i % 2 else b, i)
        assert await a.get_tag("r", "latest") == await b.get_tag("r", "latest") in {digest(i) for i in range(5)}
        assert (await tags_in(a, "r", None)).items == ["latest", "t0", "t1", "t2", "t3", "t4"]
        named = await a.read(lambda db: db.execute(
            "SELECT manifest, count(*) FROM refs GROUP BY manifest ORDER BY manifest").fetchall())
        # Each manifest's references are one push's (its last), never a mix of two.
        expected = {str(digest(n)): {4 - i % 4 for i in range(20) if i % 5 == n} for n in range(5)}
        assert all(count in expected[manifest] for manifest, count in named) and len(named) == 5


async def test_a_mark_on_one_node_never_strands_a_manifest_pushed_through_the_other(
        new_store: Callable[[], IndexStore], tmp_path: Path) -> None:
    pushes = 30
    refused = 0
    async with new_store() as a, new_store() as b:
        done = trio.Event()

        async def push(i: int) -> None:
            nonlocal refused
            await a.link_blob("r", digest(f"layer{i}"), 1)
            try:
                await put_manifest(a, "r", f"m{i}", blobs=[digest(f"layer{i}")])
            except SwarmregError as error:  # the mark took the link first: the push is refused
                assert error.code is MANIFEST_BLOB_UNKNOWN
                refused += 1

        async def collect() -> int:
            marks = 0
            while not done.is_set() or marks == 0:
                cutoff = link_time(datetime.now(UTC) + timedelta(seconds=1))  # every unnamed link is stale
                marked = await b.write(partial(mark, cutoff=cutoff, dry_run=False, spool_dir=str(tmp_path)))
                marked.spool.close()
                marks += 1
            return marks

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            async with trio.open_nursery() as pushing:
                for i in range(pushes):
                    pushing.start_soon(push, i)
            done.set()
        stranded = await a.read(lambda db: db.execute(
            "SELECT manifest, digest FROM refs WHERE kind = 'blob' AND NOT EXISTS "
            "(SELECT 1 FROM blobs WHERE blobs.repository = refs.repository AND blobs.digest = refs.digest)").fetchall())
        assert stranded == []
        recorded = await a.read(lambda db: db.execute("SELECT count(*) FROM manifests").fetchone()[0])
        assert recorded + refused == pushes


async def test_two_nodes_starting_at_once_on_a_new_database_both_find_it_current(
        new_store: Callable[[], IndexStore]) -> None:
    stores = [new_store() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(store.open)
    try:
        for store in stores:
            assert await store.schema_version() == SCHEMA_VERSION
        assert await stores[0].read(lambda db: db.execute("SELECT count(*) FROM schema_version").fetchone()[0]) == 1
    finally:
        for store in stores:
            await store.aclose()


def test_placeholders_are_translated_for_psycopg_outside_quotes_only() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c > :cutoff AND d::text LIKE '50%? :x' AND e = ?") == (
        "SELECT a FROM t WHERE b = %s AND c > %(cutoff)s AND d::text LIKE '50%%? :x' AND e = %s")
    assert translate('SELECT "odd?name" FROM t WHERE x = 1 % 2') == 'SELECT "odd?name" FROM t WHERE x = 1 %% 2'


async def test_percent_signs_and_question_marks_in_values_and_literals_stay_what_they_are(store: IndexStore) -> None:
    rows = await store.read(lambda db: db.execute(
        "SELECT '100%?', ? || ':x', ? WHERE 'a%' LIKE 'a%'", ("50%?", "%(y)s")).fetchall())
    assert [tuple(row) for row in rows] == [("100%?", "50%?:x", "%(y)s")]


async def test_calls_waiting_while_the_store_closes_are_refused_not_served(new_store: Callable[[], IndexStore]) -> None:
    store = await new_store().open()
    outcomes: list[str] = []

    async def reader() -> None:
        try:
            await store.catalog()
            outcomes.append("served")
        except RuntimeError as error:
            assert "not open" in str(error)
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(reader)
        await trio.sleep(0)  # every reader has started its call
        await store.aclose()
    assert len(outcomes) == 30 and "refused" in outcomes
    with pytest.raises(RuntimeError, match="not open"):
        await store.catalog()
