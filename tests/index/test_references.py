"""What each manifest names (the refs that garbage collection marks from), the links a manifest
needs, and the migration of a version-1 database, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from swarmreg.errors import MANIFEST_BLOB_UNKNOWN, SwarmregError
from swarmreg.index.store import SCHEMA_VERSION, IndexStore
from tests.index.helpers import INDEX, MANIFEST, digest


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


async def test_a_manifest_records_its_blobs_and_children_and_loses_them_with_it(
        store: IndexStore, tmp_path: Path) -> None:
    for layer in ("config", "l1", "l2"):
        await store.link_blob("app", digest(layer), 10)
    image = digest("image")
    await store.put_manifest("app", image, media_type=MANIFEST, size=5,
                             blobs=[digest("config"), digest("l1"), digest("l2")])
    await store.put_manifest("app", digest("list"), media_type=INDEX, size=5, children=[image])
    refs = rows(tmp_path / "index.db", "SELECT manifest, digest, kind FROM refs ORDER BY manifest, digest")
    assert sorted(refs) == sorted([(str(image), str(digest(b)), "blob") for b in ("config", "l1", "l2")]
                                  + [(str(digest("list")), str(image), "manifest")])
    # Put again with fewer blobs: the refs are replaced, not added to.
    await store.put_manifest("app", image, media_type=MANIFEST, size=5, blobs=[digest("config")])
    assert rows(tmp_path / "index.db", f"SELECT digest FROM refs WHERE manifest = '{image}'") == [
        (str(digest("config")),)]
    await store.delete_manifest("app", image)
    assert rows(tmp_path / "index.db", f"SELECT count(*) FROM refs WHERE manifest = '{image}'") == [(0,)]


async def test_a_manifest_naming_an_unlinked_blob_is_refused_and_changes_nothing(
        store: IndexStore, tmp_path: Path) -> None:
    await store.link_blob("app", digest("config"), 10)
    await store.link_blob("other", digest("layer"), 10)  # linked elsewhere: not here
    with pytest.raises(SwarmregError) as refused:
        await store.put_manifest("app", digest("image"), media_type=MANIFEST, size=5,
                                 blobs=[digest("config"), digest("layer")])
    assert refused.value.code is MANIFEST_BLOB_UNKNOWN
    assert refused.value.detail == {"digest": str(digest("layer"))}
    assert await store.get_manifest("app", digest("image")) is None
    assert rows(tmp_path / "index.db", "SELECT count(*) FROM refs") == [(0,)]


async def test_linking_and_naming_renew_the_link_time(store: IndexStore, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    await store.link_blob("app", digest("layer"), 10)
    first = rows(db, "SELECT linked FROM blobs")[0][0]
    assert isinstance(first, str) and first.endswith("Z")
    sqlite3.connect(db).execute("UPDATE blobs SET linked = '2000-01-01T00:00:00.000Z'").connection.commit()
    await store.put_manifest("app", digest("image"), media_type=MANIFEST, size=5, blobs=[digest("layer")])
    assert rows(db, "SELECT linked FROM blobs")[0][0] >= first
    sqlite3.connect(db).execute("UPDATE blobs SET linked = '2000-01-01T00:00:00.000Z'").connection.commit()
    await store.link_blob("app", digest("layer"), 10)  # a mount or a repeated upload
    assert rows(db, "SELECT linked FROM blobs")[0][0] >= first


async def test_a_version_1_database_is_migrated_with_its_references_marked_unknown(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE manifests (repository TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
            size INTEGER NOT NULL, artifact_type TEXT, subject TEXT, annotations TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL, PRIMARY KEY (repository, digest)) WITHOUT ROWID;
        CREATE TABLE tags (repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
            updated TEXT NOT NULL, PRIMARY KEY (repository, tag),
            FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
            ) WITHOUT ROWID;
        CREATE TABLE blobs (repository TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
            PRIMARY KEY (repository, digest)) WITHOUT ROWID;
    """)
    old = str(digest("old"))
    db.execute("INSERT INTO manifests VALUES ('app', ?, ?, 5, NULL, NULL, '{}', '2025-01-01T00:00:00.000Z')",
               (old, MANIFEST))
    db.execute("INSERT INTO tags VALUES ('app', 'v1', ?, '2025-01-01T00:00:00.000Z')", (old,))
    db.execute("INSERT INTO blobs VALUES ('app', ?, 10)", (str(digest("layer")),))
    db.commit()
    db.close()
    async with IndexStore(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION == 2
        assert await store.get_tag("app", "v1") == digest("old")
        assert await store.blob_size("app", digest("layer")) == 10
        await store.put_manifest("app", digest("new"), media_type=MANIFEST, size=5, blobs=[digest("layer")])
    assert sorted(rows(path, "SELECT digest, refs_known, accessed FROM manifests")) == sorted(
        [(old, 0, None), (str(digest("new")), 1, None)])
    linked = rows(path, "SELECT linked FROM blobs")[0][0]
    assert isinstance(linked, str) and linked.startswith("20") and linked.endswith("Z")


async def test_a_delete_releases_what_only_the_manifest_named(store: IndexStore, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    for layer in ("shared", "own", "other"):
        await store.link_blob("app", digest(layer), 10)
    await store.put_manifest("app", digest("a"), media_type=MANIFEST, size=5, blobs=[digest("shared"), digest("own")])
    await store.put_manifest("app", digest("b"), media_type=MANIFEST, size=5, blobs=[digest("shared")])
    assert await store.delete_manifest("app", digest("a")) == []
    links = dict(rows(db, "SELECT digest, linked FROM blobs"))
    assert links[str(digest("own"))] == ""  # released: no grace period for it
    assert links[str(digest("shared"))] != "" and links[str(digest("other"))] != ""
    assert {row[0] for row in rows(db, "SELECT digest FROM released")} == {str(digest("a")), str(digest("own"))}


async def test_deleting_an_index_takes_the_children_nothing_else_names(store: IndexStore, tmp_path: Path) -> None:
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
    assert rows(tmp_path / "index.db", "SELECT linked FROM blobs")[0][0] != ""  # still named
