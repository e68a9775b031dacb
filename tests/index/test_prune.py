"""Pruning the index (swarmreg.index.prune) on each store (SQLite, PostgreSQL): each type, counts, dry runs,
manifest lists and their children, the access times' batching, and the schedule."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import trio

from swarmreg.config import PruneConfig
from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.index.access_times import AccessTimes
from swarmreg.index.listing import list_blobs, list_images, list_manifests
from swarmreg.index.prune import PruneReport, PruneRequest, PruneSchedule, prune
from swarmreg.index.selection import parse_count, parse_patterns
from swarmreg.index.sqlite_store import SqliteIndexStore
from swarmreg.index.store import IndexStore
from tests.index.helpers import INDEX, MANIFEST, digest

DAY = 86400.0


def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def image(store: IndexStore, repository: str, name: str, *, tag: str | None = None, created: float = 0,
                accessed: float | None = None, layers: tuple[str, ...] = ()) -> Digest:
    """An image manifest naming ``layers`` (and a config of its own), recorded ``created`` days ago."""
    blobs = [digest(f"config-{name}"), *(digest(layer) for layer in layers)]
    for blob in blobs:
        await store.link_blob(repository, blob, 10)
    manifest = digest(name)
    await store.put_manifest(repository, manifest, media_type=MANIFEST, size=100, blobs=blobs)
    await backdate(store, repository, manifest, created, accessed)
    if tag:
        await store.put_tag(repository, tag, manifest)
    return manifest


async def index(store: IndexStore, repository: str, name: str, children: list[Digest], *, tag: str | None = None,
                created: float = 0, accessed: float | None = None) -> Digest:
    manifest = digest(name)
    await store.put_manifest(repository, manifest, media_type=INDEX, size=100, children=children)
    await backdate(store, repository, manifest, created, accessed)
    if tag:
        await store.put_tag(repository, tag, manifest)
    return manifest


async def backdate(store: IndexStore, repository: str, manifest: Digest, created: float,
                   accessed: float | None) -> None:
    await store.write(lambda db: db.execute(
        "UPDATE manifests SET created = ?, accessed = ? WHERE repository = ? AND digest = ?",
        (ago(created), None if accessed is None else ago(accessed), repository, str(manifest))))


async def manifests(store: IndexStore) -> set[tuple[str, str]]:
    return set(await store.read(lambda db: db.execute("SELECT repository, digest FROM manifests").fetchall()))


async def tags(store: IndexStore) -> set[tuple[str, str, str]]:
    return set(await store.read(lambda db: db.execute("SELECT repository, tag, digest FROM tags").fetchall()))


def pruned(report: PruneReport) -> set[tuple[str, str]]:
    return {(m.repository, m.digest) for m in report.manifests}


async def test_each_type_selects_what_it_says_and_a_dry_run_changes_nothing(store: IndexStore) -> None:
    old = await image(store, "team/old", "old", tag="v1", created=40)
    pulled = await image(store, "team/pulled", "pulled", tag="v1", created=40, accessed=1)
    never = await image(store, "team/never", "never", tag="v1", created=31)  # never pulled: counts from created
    new = await image(store, "team/new", "new", tag="v1", created=1)
    before_m, before_t = await manifests(store), await tags(store)

    by_access = PruneRequest("accessed", 30 * DAY, dry_run=True)
    report = await prune(store, by_access)
    assert pruned(report) == {("team/old", str(old)), ("team/never", str(never))}
    assert report.dry_run and [m.tags for m in report.manifests] == [("v1",), ("v1",)]
    assert report.manifests[0].digest == str(old)  # oldest first
    assert (await manifests(store), await tags(store)) == (before_m, before_t)

    created = await prune(store, PruneRequest("created", 30 * DAY, dry_run=True))
    assert pruned(created) == {("team/old", str(old)), ("team/pulled", str(pulled)), ("team/never", str(never))}
    by_pattern = await prune(store, PruneRequest("pattern", patterns=parse_patterns("new:v,^team/old:v1$"),
                                                 dry_run=True))
    assert pruned(by_pattern) == {("team/new", str(new)), ("team/old", str(old))}
    assert (await manifests(store), await tags(store)) == (before_m, before_t)

    # For real: the manifests and their tags go, nothing else.
    report = await prune(store, attrs.evolve(by_access, dry_run=False))
    assert pruned(report) == {("team/old", str(old)), ("team/never", str(never))}
    assert await manifests(store) == before_m - pruned(report)
    assert await tags(store) == {("team/pulled", "v1", str(pulled)), ("team/new", "v1", str(new))}
    assert await store.get_tag("team/old", "v1") is None
    # What only they named is released for garbage collection, as a delete releases it.
    released = set(await store.read(lambda db: [row[0] for row in db.execute("SELECT digest FROM released")]))
    assert {str(old), str(never), str(digest("config-old")), str(digest("config-never"))} <= released
    assert str(digest("config-pulled")) not in released


async def test_patterns_are_searched_in_every_reference_as_ociregistry_does(store: IndexStore) -> None:
    app = await image(store, "docker.io/library/nginx", "nginx", tag="1.25")
    await store.put_tag("docker.io/library/nginx", "latest", app)
    untagged = await image(store, "team/app", "untagged", created=1)
    search = await prune(store, PruneRequest("pattern", patterns=parse_patterns("docker.io"), dry_run=True))
    assert pruned(search) == {("docker.io/library/nginx", str(app))}
    assert search.manifests[0].tags == ("1.25", "latest")
    by_digest = await prune(store, PruneRequest("pattern", patterns=parse_patterns(f"@{str(untagged)[:20]}"),
                                                dry_run=True))
    assert pruned(by_digest) == {("team/app", str(untagged))}
    anchored = await prune(store, PruneRequest("pattern", patterns=parse_patterns("^nginx"), dry_run=True))
    assert not anchored.manifests
    # An empty part of the list is dropped, not taken as "match everything".
    assert parse_patterns("nothing-like-this,,") == parse_patterns("nothing-like-this")
    with pytest.raises(SwarmregError) as refused:
        PruneRequest("pattern", patterns=parse_patterns(","))
    assert refused.value.detail == {"parameter": "expr"}
    with pytest.raises(SwarmregError) as bad:
        parse_patterns("ok,(unclosed", "expr")
    assert bad.value.status == 400 and bad.value.detail == {"parameter": "expr"}


async def test_count_limits_the_selected_manifests_oldest_first(store: IndexStore) -> None:
    made = [await image(store, "team/app", f"m{days}", tag=f"t{days}", created=days) for days in (50, 40, 60, 45)]
    report = await prune(store, PruneRequest("created", 30 * DAY, count=2))
    assert [m.digest for m in report.manifests] == [str(made[2]), str(made[0])]  # 60 and 50 days old
    assert len(await manifests(store)) == 2
    assert not (await prune(store, PruneRequest("created", 30 * DAY, count=0))).manifests
    assert len((await prune(store, PruneRequest("created", 30 * DAY, count=None))).manifests) == 2
    assert parse_count(None, 5) == 5 and parse_count("-1", 5) is None and parse_count("7", 5) == 7
    for bad in ("x", "-2", "1.5", "9" * 20):
        with pytest.raises(SwarmregError):
            parse_count(bad, 5)


async def test_a_pruned_list_takes_its_children_unless_something_else_names_them(store: IndexStore) -> None:
    only_v1 = await image(store, "team/multi", "amd64-v1", created=40, layers=("shared-layer",))
    shared = await image(store, "team/multi", "arm64", created=40)
    tagged_child = await image(store, "team/multi", "tagged-child", tag="child", created=40)
    only_v2 = await image(store, "team/multi", "amd64-v2", created=40)
    v1 = await index(store, "team/multi", "list-v1", [only_v1, shared, tagged_child], tag="v1", created=40)
    v2 = await index(store, "team/multi", "list-v2", [shared, only_v2], tag="v2", created=40, accessed=0)

    report = await prune(store, PruneRequest("pattern", patterns=parse_patterns("^team/multi:v1$")))
    assert [(m.digest, m.parent) for m in report.manifests] == [(str(v1), None), (str(only_v1), str(v1))]
    left = await manifests(store)
    assert {str(shared), str(tagged_child), str(only_v2), str(v2)} <= {d for _r, d in left}
    assert str(only_v1) not in {d for _r, d in left}

    # v2 was pulled just now, its children never: they are not pruned out of the list by themselves.
    by_access = await prune(store, PruneRequest("accessed", 30 * DAY, dry_run=True))
    assert pruned(by_access) == {("team/multi", str(tagged_child))}  # tagged: an image of its own
    # When v2 goes, its children go with it.
    gone = await prune(store, PruneRequest("pattern", patterns=parse_patterns(":v2$")))
    assert pruned(gone) == {("team/multi", str(v2)), ("team/multi", str(shared)), ("team/multi", str(only_v2))}


async def test_an_untagged_manifest_of_a_moment_ago_is_a_push_under_way(store: IndexStore) -> None:
    pushing = await image(store, "team/app", "pushing")  # its tag, or its list, is still to come
    done = await image(store, "team/app", "done", tag="v1")
    everything = await prune(store, PruneRequest("created", 0, dry_run=True))
    assert pruned(everything) == {("team/app", str(done))}
    await backdate(store, "team/app", pushing, 2 / 24 / 60, None)  # two minutes: abandoned
    assert ("team/app", str(pushing)) in pruned(await prune(store, PruneRequest("pattern", patterns=(
        parse_patterns("team/app")))))


async def test_nested_indexes_go_whole(store: IndexStore) -> None:
    leaf = await image(store, "team/n", "leaf")
    inner = await index(store, "team/n", "inner", [leaf])
    outer = await index(store, "team/n", "outer", [inner], tag="v1")
    report = await prune(store, PruneRequest("pattern", patterns=parse_patterns("team/n:v1")))
    assert [m.digest for m in report.manifests] == [str(outer), str(inner), str(leaf)]
    assert not await manifests(store)


async def test_lists_filter_and_count_references(store: IndexStore) -> None:
    one = await image(store, "team/one", "one", tag="v1", layers=("common", "only-one"))
    await image(store, "team/two", "two", tag="v1", layers=("common",))
    multi = await index(store, "team/multi", "multi", [await image(store, "team/multi", "child", layers=("deep",))],
                        tag="v1")
    images = await list_images(store)
    assert [i["reference"] for i in images] == ["team/multi:v1", "team/one:v1", "team/two:v1"]
    assert str(digest("deep")) in images[0]["blobs"]  # a list's image names its children's blobs
    assert [i["reference"] for i in await list_images(store, digest=str(digest("only-one"))[7:20])] == ["team/one:v1"]
    assert [i["reference"] for i in await list_images(store, parse_patterns("one,two"), count=1)] == ["team/one:v1"]
    listed = await list_manifests(store, parse_patterns("multi"))
    assert {m["digest"] for m in listed} == {str(multi), str(digest("child"))}
    assert [m for m in listed if m["digest"] == str(multi)][0]["children"] == [str(digest("child"))]
    blobs = {b["digest"]: b for b in await list_blobs(store)}
    assert (blobs[str(digest("common"))]["manifests"], blobs[str(digest("common"))]["repositories"]) == (2, 2)
    assert (blobs[str(digest("only-one"))]["manifests"], blobs[str(digest("only-one"))]["repositories"]) == (1, 1)
    assert len(await list_blobs(store, count=2)) == 2
    assert [b["digest"] for b in await list_blobs(store, substr=str(digest("deep"))[10:30])] == [str(digest("deep"))]
    assert [m["digest"] for m in await list_manifests(store, parse_patterns("^team/one:v1$"))] == [str(one)]


async def test_access_times_are_batched_and_never_move_back(store: IndexStore) -> None:
    app = await image(store, "team/app", "app", tag="v1")
    times = AccessTimes(store)
    times.touch("team/app", app)
    times.touch("team/gone", digest("nothing"))  # deleted meanwhile: nothing to update
    assert await store.read(lambda db: db.execute("SELECT accessed FROM manifests").fetchone()) == (None,)
    assert await times.flush() == 2 and times.pending == 0
    first = await store.read(lambda db: db.execute("SELECT accessed FROM manifests").fetchone()[0])
    assert first is not None and datetime.fromisoformat(first) > datetime.now(UTC) - timedelta(minutes=1)
    await store.write(lambda db: db.execute("UPDATE manifests SET accessed = '2999-01-01T00:00:00.000Z'"))
    times.touch("team/app", app)
    await times.flush()
    assert await store.read(lambda db: db.execute("SELECT accessed FROM manifests").fetchone()[0]) == (
        "2999-01-01T00:00:00.000Z")


async def test_a_failed_flush_keeps_its_notes(sqlite_store: SqliteIndexStore, tmp_path: Path) -> None:
    store = sqlite_store
    app = await image(store, "team/app", "app", tag="v1")
    times = AccessTimes(store)
    times.touch("team/app", app)
    # A concurrent writer holds the database past the busy timeout: the write fails.
    await store.write(lambda db: db.execute("PRAGMA busy_timeout = 50"))
    other = sqlite3.connect(tmp_path / "index.db", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            await times.flush()
        assert times.pending == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await times.flush() == 1


async def test_the_flusher_writes_on_its_interval_and_at_stop(store: IndexStore) -> None:
    app = await image(store, "team/app", "app", tag="v1")
    times = AccessTimes(store, interval=0.05)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(times.run, stop)
        times.touch("team/app", app)
        with trio.fail_after(10):
            while not times.flushed:  # written without anything asking
                await trio.sleep(0.01)
        times.touch("team/app", app)
        stop.set()
    assert times.pending == 0 and times.flushed == 2


async def test_the_schedule_prunes_on_time_and_survives_a_failed_run(store: IndexStore, autojump_clock: object) -> None:
    await image(store, "team/old", "old", tag="v1", created=40)
    failures = []

    async def before() -> None:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("disk I/O error")

    stop = trio.Event()
    schedule = PruneSchedule(store, PruneConfig(enabled=True, type="created", duration=30 * DAY, frequency=3600),
                             stop, before=before)
    async with trio.open_nursery() as nursery:
        await nursery.start(schedule.run)
        while schedule.runs < 2:  # (virtual time: an hour a run)
            await trio.sleep(60)
        stop.set()
    assert failures and not await manifests(store)
