"""What the index holds, for the admin API's lists (ociregistry's ``/cmd/.../list``): images (tags
and the manifests they point at), manifests with their tags, blobs with their reference counts.

Each list is read in one transaction, sorted, filtered (swarmreg.index.selection's patterns) and
cut at ``count`` (None: all).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from swarmreg.index.selection import matches, references
from swarmreg.index.store import NO_LIMIT, Db, IndexStore

# An index's children are followed this deep for the blobs of an image (as the pull-through's MAX_DEPTH).
_DEPTH = 2


def _named(db: Db, repository: str, manifest: str) -> tuple[list[str], list[str]]:
    """The blobs the manifest names, and its child manifests (one indexed lookup: lists stop at
    ``count`` without reading every manifest's references)."""
    blobs: list[str] = []
    children: list[str] = []
    for digest, kind in db.execute("SELECT digest, kind FROM refs WHERE repository = ? AND manifest = ? "
                                   "ORDER BY digest", (repository, manifest)):
        (blobs if kind == "blob" else children).append(digest)
    return blobs, children


def _image_blobs(db: Db, repository: str, digest: str, depth: int = 0) -> list[str]:
    """The blobs of a manifest and of the child manifests it lists."""
    blobs, children = _named(db, repository, digest)
    found = list(blobs)
    if depth < _DEPTH:
        for child in children:
            found += _image_blobs(db, repository, child, depth + 1)
    return list(dict.fromkeys(found))


async def list_images(store: IndexStore, patterns: tuple[re.Pattern[str], ...] = (), digest: str = "",
                      count: int | None = None) -> list[dict[str, Any]]:
    """Tagged images ``repository:tag`` -> manifest, sorted by reference, with the blobs each
    names (its children's too); ``patterns`` filter the ``repository:tag`` references, ``digest``
    keeps the images naming a blob whose digest contains it."""
    def work(db: Db) -> list[dict[str, Any]]:
        found = []
        for repository, tag, manifest, media_type, size, created, accessed in db.execute(
                """SELECT t.repository, t.tag, t.digest, m.media_type, m.size, m.created, m.accessed
                   FROM tags t JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest
                   ORDER BY t.repository, t.tag"""):
            reference = f"{repository}:{tag}"
            if patterns and not matches(patterns, [reference]):
                continue
            named = _image_blobs(db, repository, manifest)
            if digest and not any(digest in blob for blob in named):
                continue
            found.append({"reference": reference, "repository": repository, "tag": tag, "digest": manifest,
                          "media_type": media_type, "size": size, "created": created, "accessed": accessed,
                          "blobs": named})
            if count is not None and len(found) >= count:
                break
        return found

    return await store.read(work)


async def list_manifests(store: IndexStore, patterns: tuple[re.Pattern[str], ...] = (),
                         count: int | None = None) -> list[dict[str, Any]]:
    """Every manifest with its tags and children, sorted by repository and digest; ``patterns``
    filter its references (``repository:tag`` each, ``repository@digest``)."""
    def work(db: Db) -> list[dict[str, Any]]:
        tags: dict[tuple[str, str], list[str]] = defaultdict(list)
        for repository, manifest, tag in db.execute("SELECT repository, digest, tag FROM tags ORDER BY tag"):
            tags[(repository, manifest)].append(tag)
        found = []
        for repository, manifest, media_type, size, created, accessed in db.execute(
                "SELECT repository, digest, media_type, size, created, accessed FROM manifests "
                "ORDER BY repository, digest"):
            key = (repository, manifest)
            if patterns and not matches(patterns, references(repository, manifest, tags.get(key, ()))):
                continue
            blobs, children = _named(db, repository, manifest)
            found.append({"repository": repository, "digest": manifest, "media_type": media_type, "size": size,
                          "created": created, "accessed": accessed, "tags": tags.get(key, []),
                          "children": children, "blobs": blobs})
            if count is not None and len(found) >= count:
                break
        return found

    return await store.read(work)


async def list_blobs(store: IndexStore, substr: str = "", count: int | None = None) -> list[dict[str, Any]]:
    """Blobs by digest with their reference counts: ``manifests`` naming them (config and layers)
    and ``repositories`` linking them; ``substr`` keeps the digests that contain it."""
    def work(db: Db) -> list[dict[str, Any]]:
        rows = db.execute(
            """SELECT l.digest, max(l.size), count(*),
                      (SELECT count(*) FROM refs r WHERE r.digest = l.digest AND r.kind = 'blob')
               FROM blobs l WHERE instr(l.digest, ?) > 0 GROUP BY l.digest ORDER BY l.digest LIMIT ?""",
            (substr, NO_LIMIT if count is None else count)).fetchall()
        return [{"digest": digest, "size": size, "repositories": linked, "manifests": named}
                for digest, size, linked, named in rows]

    return await store.read(work)
