"""What each manifest names (the refs that garbage collection marks from), the links a manifest
needs, and the migration of a version-1 database, on each store (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from swarmreg.errors import MANIFEST_BLOB_UNKNOWN, SwarmregError
from swarmreg.index.store import SCHEMA_VERSION, IndexStore
from tests.index.helpers import INDEX, MANIFEST, digest, old_database


async def rows(store: IndexStore, query: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await store.read(lambda db: db.execute(query).fetchall())]


async def test_a_manifest_records_its_blobs_and_children_and_loses_them_with_it(
        store: IndexStore) -> None:
    for layer in ("config", "l1", "l2"):
        await store.link_blob("app", digest(layer), 10)
    image = digest("image")
    await store.put_manifest("app", image, media_type=MANIFEST, size=5,
                             blobs=[digest("config"), digest("l1"), digest("l2")])
    await store.put_manifest("app", digest("list"), media_type=INDEX, size=5, children=[image])
    refs = await rows(store, "SELECT manifest, digest, kind FROM refs ORDER BY manifest, digest")
    assert sorted(refs) == sorted([(str(image), str(digest(b)), "blob") for b in ("config", "l1", "l2")]
                                  + [(str(digest("list")), str(image), "manifest")])
    # Put again with fewer blobs: the refs are replaced, not added to.
    await store.put_manifest("app", image, media_type=MANIFEST, size=5, blobs=[digest("config")])
    assert await rows(store, f"SELECT digest FROM refs WHERE manifest = '{image}'") == [
        (str(digest("config")),)]
    await store.delete_manifest("app", image)
    assert await rows(store, f"SELECT count(*) FROM refs WHERE manifest = '{image}'") == [(0,)]


async def test_a_manifest_naming_an_unlinked_blob_is_refused_and_changes_nothing(
        store: IndexStore) -> None:
    await store.link_blob("app", digest("config"), 10)
    await store.link_blob("other", digest("layer"), 10)  # linked elsewhere: not here
    with pytest.raises(SwarmregError) as refused:
        await store.put_manifest("app", digest("image"), media_type=MANIFEST, size=5,
                                 blobs=[digest("config"), digest("layer")])
    assert refused.value.code is MANIFEST_BLOB_UNKNOWN
    assert refused.value.detail == {"digest": str(digest("layer"))}
    assert await store.get_manifest("app", digest("image")) is None
    assert await rows(store, "SELECT count(*) FROM refs") == [(0,)]


async def test_linking_and_naming_renew_the_link_time(store: IndexStore) -> None:
    await store.link_blob("app", digest("layer"), 10)
    first = (await rows(store, "SELECT linked FROM blobs"))[0][0]
    assert isinstance(first, str) and first.endswith("Z")
    await store.write(lambda db: db.execute("UPDATE blobs SET linked = '2000-01-01T00:00:00.000Z'"))
    await store.put_manifest("app", digest("image"), media_type=MANIFEST, size=5, blobs=[digest("layer")])
    assert (await rows(store, "SELECT linked FROM blobs"))[0][0] >= first
    await store.write(lambda db: db.execute("UPDATE blobs SET linked = '2000-01-01T00:00:00.000Z'"))
    await store.link_blob("app", digest("layer"), 10)  # a mount or a repeated upload
    assert (await rows(store, "SELECT linked FROM blobs"))[0][0] >= first


def version_1(database: str) -> None:
    """A database as swarmreg with schema version 1 left it (that version's own statements)."""
    old = str(digest("old"))
    old_database(database, 1, [
        ("INSERT INTO manifests VALUES ('app', ?, ?, 5, NULL, NULL, '{}', '2025-01-01T00:00:00.000Z')",
         (old, MANIFEST)),
        ("INSERT INTO tags VALUES ('app', 'v1', ?, '2025-01-01T00:00:00.000Z')", (old,)),
        ("INSERT INTO blobs VALUES ('app', ?, 10)", (str(digest("layer")),))])


async def test_a_version_1_database_is_migrated_with_its_references_marked_unknown(
        database: str, new_store: Callable[[], IndexStore]) -> None:
    version_1(database)
    async with new_store() as store:
        assert await store.schema_version() == SCHEMA_VERSION == 3
        assert await store.get_tag("app", "v1") == digest("old")
        assert await store.blob_size("app", digest("layer")) == 10
        await store.put_manifest("app", digest("new"), media_type=MANIFEST, size=5, blobs=[digest("layer")])
        assert sorted(await rows(store, "SELECT digest, refs_known, accessed FROM manifests")) == sorted(
            [(str(digest("old")), 0, None), (str(digest("new")), 1, None)])
        linked = (await rows(store, "SELECT linked FROM blobs"))[0][0]
    assert isinstance(linked, str) and linked.startswith("20") and linked.endswith("Z")


async def test_a_delete_releases_what_only_the_manifest_named(store: IndexStore) -> None:
    for layer in ("shared", "own", "other"):
        await store.link_blob("app", digest(layer), 10)
    await store.put_manifest("app", digest("a"), media_type=MANIFEST, size=5, blobs=[digest("shared"), digest("own")])
    await store.put_manifest("app", digest("b"), media_type=MANIFEST, size=5, blobs=[digest("shared")])
    assert await store.delete_manifest("app", digest("a")) == []
    links = dict(await rows(store, "SELECT digest, linked FROM blobs"))
    assert links[str(digest("own"))] == ""  # released: no grace period for it
    assert links[str(digest("shared"))] != "" and links[str(digest("other"))] != ""
    released = {row[0] for row in await rows(store, "SELECT digest FROM released")}
    assert released == {str(digest("a")), str(digest("own"))}


async def test_deleting_an_index_takes_the_children_nothing_else_names(store: IndexStore) -> None:
    await store.link_blob("app", digest("layer"), 10)
    for child in ("amd64", "arm64", "tagged", "shared"):
        await store.put_manifest("app", digest(child), media_type=MANIFEST, size=5, blobs=[digest("layer")])
    await store.put_tag("app", "arm", digest("tagged"))
    await store.put_manifest("app", digest("list"), media_type=INDEX, size=5,
                             children=[digest(c) for c in ("amd64", "arm64", "tagged", "shared")])
    await store.put_manifest("app", digest("other-list"), media_type=INDEX, size=5, children=[digest("shared")])
    await store.put_tag("app", "latest", digest("list"))
    assert await store.delete_manifest("app", digest("list")) == ["latest"]
    for gone in ("list", "amd64", "arm64"):
        assert await store.get_manifest("app", digest(gone)) is None, gone
    for kept in ("tagged", "shared", "other-list"):  # a tag or another index names them
        assert await store.get_manifest("app", digest(kept)) is not None, kept
    assert (await rows(store, "SELECT linked FROM blobs"))[0][0] != ""  # still named
