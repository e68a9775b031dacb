"""Pruning the index, as ociregistry prunes its cache: manifests not pulled within a duration
(``accessed``; one never pulled counts from when it was recorded), recorded before a duration
(``created``), or whose references match patterns (``pattern``, see swarmreg.index.selection).

A pruned manifest goes with its tags (IndexStore.delete_manifest's semantics), and a pruned
manifest list or index takes its child manifests along, unless a tag or another manifest that
stays names them. A manifest that a remaining list names is never selected by itself: pruning
one platform out of a list would break the list's pulls of it. Blob bytes are left to garbage
collection: the links only a pruned manifest named are released (as a delete releases them), so
the next collection sweeps those blobs, and one another image names stays. An untagged manifest
younger than PUSH_GRACE is a push under way and is not selected. Selection and deletion are one
transaction (a dry run reads the same snapshot and deletes nothing).

``PruneSchedule`` runs ``[prune]`` every ``frequency`` in the index service's nursery.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import trio

from swarmreg.config import PruneConfig
from swarmreg.durations import MAX_SECONDS
from swarmreg.errors import SwarmregError
from swarmreg.index.selection import PRUNE_TYPES, bad_parameter, matches, parse_patterns, references
from swarmreg.index.store import Db, IndexStore, _delete_manifest, _now

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (repository, manifest digest)

# A manifest recorded this recently without a tag belongs to a push under way (the proxy records
# a manifest, then its tag; a list's children come before the list): never selected.
PUSH_GRACE = 60.0


@attrs.frozen
class PruneRequest:
    """One prune: ``type`` (accessed, created, pattern), ``duration`` in seconds (not for
    pattern), ``patterns`` (for pattern), at most ``count`` selected manifests (None: no limit)."""

    type: str
    duration: float = 0.0
    patterns: tuple[re.Pattern[str], ...] = ()
    count: int | None = None
    dry_run: bool = False

    def __attrs_post_init__(self) -> None:
        if self.type not in PRUNE_TYPES:
            raise bad_parameter("type", f"expected one of {', '.join(PRUNE_TYPES)}")
        if self.type == "pattern" and not self.patterns:
            raise bad_parameter("expr", "pruning by pattern needs at least one regular expression")

    @classmethod
    def from_json(cls, body: Any) -> PruneRequest:
        """The request from the index API's JSON body (``type``, ``duration``, ``expr``, ``count``,
        ``dry_run``); BAD_REQUEST naming the field that is wrong."""
        if not isinstance(body, dict) or set(body) - {"type", "duration", "expr", "count", "dry_run"}:
            raise bad_parameter("body", "expected an object of type, duration, expr, count, dry_run")
        duration, count, dry_run, expr = (body.get("duration", 0), body.get("count"), body.get("dry_run", False),
                                          body.get("expr"))
        if not isinstance(duration, int | float) or isinstance(duration, bool) or not 0 <= duration <= MAX_SECONDS:
            raise bad_parameter("duration", "expected seconds")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise bad_parameter("count", "expected a whole number or null (no limit)")
        if not isinstance(dry_run, bool):
            raise bad_parameter("dry_run", "expected true or false")
        if expr is not None and not isinstance(expr, str):
            raise bad_parameter("expr", "expected comma-separated regular expressions")
        return cls(str(body.get("type")), float(duration), parse_patterns(expr, "expr"), count, dry_run)

    @classmethod
    def from_config(cls, config: PruneConfig) -> PruneRequest:
        return cls(config.type, config.duration, (), None if config.count < 0 else config.count, config.dry_run)


@attrs.frozen
class PrunedManifest:
    """A manifest pruned (or, in a dry run, that would be); ``parent`` is the list it went with."""

    repository: str
    digest: str
    media_type: str
    size: int
    created: str
    accessed: str | None
    tags: tuple[str, ...]
    parent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "digest": self.digest, "media_type": self.media_type,
                "size": self.size, "created": self.created, "accessed": self.accessed, "tags": list(self.tags),
                "parent": self.parent}


@attrs.frozen
class PruneReport:
    type: str
    dry_run: bool
    manifests: tuple[PrunedManifest, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "dry_run": self.dry_run, "count": len(self.manifests),
                "manifests": [manifest.to_json() for manifest in self.manifests]}


def _time(text: str | None) -> datetime | None:
    try:
        return None if text is None else datetime.fromisoformat(text)
    except ValueError:
        return None


class _Snapshot:
    """The manifests, their tags and the lists naming them, read in the prune's transaction."""

    def __init__(self, db: Db) -> None:
        self.rows: dict[Key, tuple[str, int, str, str | None]] = {
            (repository, digest): (media_type, size, created, accessed)
            for repository, digest, media_type, size, created, accessed in db.execute(
                "SELECT repository, digest, media_type, size, created, accessed FROM manifests")}
        self.tags: dict[Key, list[str]] = defaultdict(list)
        for repository, digest, tag in db.execute("SELECT repository, digest, tag FROM tags ORDER BY tag"):
            self.tags[(repository, digest)].append(tag)
        self.children: dict[Key, list[Key]] = defaultdict(list)
        self.parents: dict[Key, set[Key]] = defaultdict(set)
        for repository, manifest, child in db.execute(
                "SELECT repository, manifest, digest FROM refs WHERE kind = 'manifest' ORDER BY digest"):
            if (repository, child) in self.rows:
                self.children[(repository, manifest)].append((repository, child))
                self.parents[(repository, child)].add((repository, manifest))

    def record(self, key: Key, parent: Key | None = None) -> PrunedManifest:
        media_type, size, created, accessed = self.rows[key]
        return PrunedManifest(key[0], key[1], media_type, size, created, accessed, tuple(self.tags.get(key, ())),
                              None if parent is None else parent[1])


def _candidates(snapshot: _Snapshot, request: PruneRequest, now: datetime) -> list[Key]:
    """The manifests the request's type selects, oldest first."""
    cutoff = now - timedelta(seconds=request.duration)
    pushing = now - timedelta(seconds=PUSH_GRACE)
    chosen: list[tuple[datetime, Key]] = []
    for key, (_media_type, _size, created, accessed) in snapshot.rows.items():
        when = _time(created)
        if when is None or (when > pushing and not snapshot.tags.get(key)):  # unreadable, or being pushed
            continue
        if request.type == "pattern":
            if matches(request.patterns, references(key[0], key[1], snapshot.tags.get(key, ()))):
                chosen.append((when, key))
        else:
            if request.type == "accessed":
                when = _time(accessed) or when
            if when < cutoff:
                chosen.append((when, key))
    return [key for _when, key in sorted(chosen)]


def _roots(snapshot: _Snapshot, selected: list[Key]) -> list[Key]:
    """``selected`` without the manifests that a list staying names, nor the untagged ones a
    selected list takes along anyway (they go as its children)."""
    chosen = set(selected)
    changed = True
    while changed:  # dropping a list may protect its children in turn
        changed = False
        for key in list(chosen):
            if any(parent not in chosen for parent in snapshot.parents.get(key, ())):
                chosen.discard(key)
                changed = True
    return [key for key in selected if key in chosen and (snapshot.tags.get(key) or not snapshot.parents.get(key))]


def _with_children(snapshot: _Snapshot, roots: list[Key]) -> list[tuple[Key, Key | None]]:
    """The roots and the child manifests they take: a child goes when it has no tag and every
    manifest naming it goes too."""
    going: dict[Key, Key | None] = dict.fromkeys(roots)
    order = list(roots)
    index = 0
    while index < len(order):
        parent = order[index]
        index += 1
        for child in snapshot.children.get(parent, ()):
            if child in going or snapshot.tags.get(child):
                continue
            if all(other in going for other in snapshot.parents[child]):
                going[child] = parent
                order.append(child)
    return [(key, going[key]) for key in order]


def plan_and_prune(db: Db, request: PruneRequest, now: datetime) -> PruneReport:
    """Select what ``request`` prunes and, unless it is a dry run, delete it (in ``db``'s transaction)."""
    snapshot = _Snapshot(db)
    roots = _roots(snapshot, _candidates(snapshot, request, now))
    if request.count is not None:
        roots = _roots(snapshot, roots[:request.count])
    pruned = [snapshot.record(key, parent) for key, parent in _with_children(snapshot, roots)]
    if not request.dry_run:
        released = _now()
        for manifest in pruned:
            # As a DELETE of the manifest: its tags go, and what only it named is released for
            # garbage collection (a list's children it alone named go with it, as planned here).
            if db.execute("SELECT 1 FROM manifests WHERE repository = ? AND digest = ?",
                          (manifest.repository, manifest.digest)).fetchone():
                _delete_manifest(db, manifest.repository, manifest.digest, released)
    return PruneReport(request.type, request.dry_run, tuple(pruned))


async def prune(store: IndexStore, request: PruneRequest, *,
                before: Callable[[], Awaitable[object]] | None = None) -> PruneReport:
    """Run ``request`` against ``store``; ``before`` runs first (the access times' flush, so a
    pull of a moment ago counts). Logs what was pruned."""
    if before is not None:
        await before()
    now = datetime.now(UTC)
    if request.dry_run:
        report = await store.read(lambda db: plan_and_prune(db, request, now))
    else:
        report = await store.write(lambda db: plan_and_prune(db, request, now))
    verb = "would prune" if request.dry_run else "pruned"
    for manifest in report.manifests:
        log.info("prune (%s): %s %s@%s%s%s", request.type, verb, manifest.repository, manifest.digest,
                 f" tags {','.join(manifest.tags)}" if manifest.tags else "",
                 f" (child of {manifest.parent})" if manifest.parent else "")
    log.info("prune (%s%s): %d manifest(s) %s", request.type, ", dry run" if request.dry_run else "",
             len(report.manifests), verb)
    return report


class PruneSchedule:
    """``[prune]``: a prune every ``frequency`` seconds until ``stop``; a failed run is logged and
    the next one comes on time."""

    def __init__(self, store: IndexStore, config: PruneConfig, stop: trio.Event, *,
                 before: Callable[[], Awaitable[object]] | None = None) -> None:
        self.store = store
        self.config = config
        self.stop = stop
        self.before = before
        self.request = PruneRequest.from_config(config)
        self.runs = 0  # completed runs, for tests and logs

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.info("pruning every %gs: %s older than %gs%s%s", self.config.frequency, self.config.type,
                 self.config.duration, f", at most {self.config.count} a run" if self.config.count >= 0 else "",
                 " (dry run)" if self.config.dry_run else "")
        task_status.started()
        while not self.stop.is_set():
            with trio.move_on_after(self.config.frequency):
                await self.stop.wait()
            if self.stop.is_set():
                return
            try:
                await prune(self.store, self.request, before=self.before)
            except (SwarmregError, OSError) as error:
                log.warning("scheduled prune failed: %s", error)
            except Exception:  # never take the index down
                log.exception("scheduled prune failed")
            self.runs += 1
