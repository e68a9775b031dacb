"""The replication queue in the index's database (schema version 3's ``replication`` table).

One row per tag owed to one remote cluster, in the order the tags were recorded (``id``);
IndexStore.put_tag adds them in the transaction that records the tag. An entry is sent only
while it is the oldest of its remote and repository (per-repository order) and no live lease
holds it: the index node that claims an entry leases it (``leased_by`` its node id,
``lease_until`` a time it renews while it sends), so two nodes on one PostgreSQL database never
send the same entry at once, and the entries of a node that died come free when their leases lapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from swarmreg.digest import Digest
from swarmreg.index.store import NO_LIMIT, Db, IndexStore, timestamp

# The longest last_error kept (it quotes the remote's answer).
MAX_ERROR = 1000

# Each repository's oldest entry for one remote: the one sent next.
_HEADS = "SELECT min(id) FROM replication WHERE remote = ? GROUP BY repository"


def _now() -> str:
    return timestamp(datetime.now(UTC))


def _later(seconds: float) -> str:
    return timestamp(datetime.now(UTC) + timedelta(seconds=seconds))


@attrs.frozen
class QueueEntry:
    """A tag owed to a remote: its repository and name, the manifest it pointed at when recorded."""

    id: int
    remote: str
    repository: str
    tag: str
    digest: Digest
    attempts: int = 0


@attrs.frozen
class Claimed:
    """What a claim got: the entries now leased to the node, and when the next of the remote's
    other heads is due (None: none is queued)."""

    entries: tuple[QueueEntry, ...]
    next_due: str | None


@attrs.frozen
class RepositoryQueue:
    """One remote's queue for one repository, as ``swarmreg replication status`` shows it: how
    many entries, when the oldest was recorded, and its head (the entry sent next): tag, digest,
    attempts so far, when it is tried next, why the last attempt failed, whether a node sends it now."""

    remote: str
    repository: str
    pending: int
    oldest: str
    tag: str
    digest: str
    attempts: int
    next_attempt: str
    last_error: str | None
    sending: bool

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _claim(db: Db, remote: str, node: str, limit: int, lease: float) -> Claimed:
    now = _now()
    heads = db.execute("SELECT id, repository, tag, digest, attempts, next_attempt, lease_until FROM replication "
                       f"WHERE id IN ({_HEADS}) ORDER BY id", (remote,)).fetchall()
    entries: list[QueueEntry] = []
    waits: list[str] = []
    for entry_id, repository, tag, digest, attempts, next_attempt, lease_until in heads:
        if lease_until is not None and lease_until > now:
            waits.append(lease_until)  # a node sends it: its repository is due once that lease lapses
        elif next_attempt > now or len(entries) >= limit:
            waits.append(max(next_attempt, now))
        else:
            entries.append(QueueEntry(entry_id, remote, repository, tag, Digest.parse(digest), attempts))
    if entries:
        until = _later(lease)
        db.executemany("UPDATE replication SET leased_by = ?, lease_until = ? WHERE id = ?",
                       [(node, until, entry.id) for entry in entries])
    return Claimed(tuple(entries), min(waits, default=None))


class ReplicationQueue:
    """The queue's operations for index node ``node`` (its id: swarmreg.index.replicator), each
    one transaction of ``store``; ``lease`` is how many seconds a claim or renewal holds an entry."""

    def __init__(self, store: IndexStore, node: str, lease: float) -> None:
        self.store = store
        self.node = node
        self.lease = lease

    async def claim(self, remote: str, limit: int) -> Claimed:
        """Lease up to ``limit`` of the remote's heads that are due and held by no live lease."""
        return await self.store.write(lambda db: _claim(db, remote, self.node, limit, self.lease))

    async def renew(self, entry: QueueEntry) -> bool:
        """Extend this node's lease of ``entry``; False when it no longer holds it."""
        return await self.store.write(lambda db: db.execute(
            "UPDATE replication SET lease_until = ? WHERE id = ? AND leased_by = ?",
            (_later(self.lease), entry.id, self.node)).rowcount > 0)

    async def finish(self, entry: QueueEntry) -> bool:
        """``entry`` is sent (or superseded): it leaves the queue, if this node still holds it."""
        return await self.store.write(lambda db: db.execute(
            "DELETE FROM replication WHERE id = ? AND leased_by = ?", (entry.id, self.node)).rowcount > 0)

    async def retry(self, entry: QueueEntry, error: str, delay: float) -> None:
        """``entry`` failed: one attempt more, ``error`` kept, tried again in ``delay`` seconds."""
        await self.store.write(lambda db: db.execute(
            "UPDATE replication SET attempts = attempts + 1, last_error = ?, next_attempt = ?, "
            "leased_by = NULL, lease_until = NULL WHERE id = ? AND leased_by = ?",
            (error[:MAX_ERROR], _later(delay), entry.id, self.node)))

    async def release(self, entry: QueueEntry | None = None) -> int:
        """Give up this node's lease of ``entry`` (None: of every entry it holds, as a node does
        when it starts again); nothing else changes. How many it gave up."""
        if entry is None:
            return await self.store.write(lambda db: db.execute(
                "UPDATE replication SET leased_by = NULL, lease_until = NULL WHERE leased_by = ?",
                (self.node,)).rowcount)
        return await self.store.write(lambda db: db.execute(
            "UPDATE replication SET leased_by = NULL, lease_until = NULL WHERE id = ? AND leased_by = ?",
            (entry.id, self.node)).rowcount)



async def queue_status(store: IndexStore, remotes: Sequence[str], limit: int | None) -> dict[str, Any]:
    """The queue as the index's admin route answers it (swarmreg.index.wire.ADMIN_REPLICATION):
    per remote (every one of ``remotes``, the configured ones, and any other with entries left
    queued), its totals and its repositories' queues, the first ``limit`` of them in all (None: all)."""
    def work(db: Db) -> tuple[list[Any], list[RepositoryQueue]]:
        totals = db.execute("SELECT remote, count(*), count(DISTINCT repository), min(queued) FROM replication "
                            "GROUP BY remote").fetchall()
        return totals, _repository_queues(db, NO_LIMIT if limit is None else limit + 1)

    totals, queues = await store.read(work)
    truncated = limit is not None and len(queues) > limit
    by_remote: dict[str, dict[str, Any]] = {
        remote: {"remote": remote, "configured": True, "pending": 0, "repositories": 0, "oldest": None, "queues": []}
        for remote in remotes}
    for remote, pending, repositories, oldest in totals:
        entry = by_remote.setdefault(remote, {"remote": remote, "configured": False, "queues": []})
        entry.update(pending=pending, repositories=repositories, oldest=oldest)
    for queue in queues[:limit]:
        by_remote[queue.remote]["queues"].append(queue.to_json())
    return {"remotes": [by_remote[remote] for remote in sorted(by_remote)], "truncated": truncated}


def _repository_queues(db: Db, limit: int) -> list[RepositoryQueue]:
    now = _now()
    rows = db.execute(
        "SELECT g.remote, g.repository, g.pending, g.oldest, h.tag, h.digest, h.attempts, h.next_attempt, "
        "h.last_error, h.lease_until FROM (SELECT remote, repository, count(*) AS pending, min(queued) AS oldest, "
        "min(id) AS head FROM replication GROUP BY remote, repository) AS g JOIN replication AS h ON h.id = g.head "
        "ORDER BY g.remote, g.repository LIMIT ?", (limit,)).fetchall()
    return [RepositoryQueue(remote, repository, pending, oldest, tag, digest, attempts, next_attempt, last_error,
                            sending=lease_until is not None and lease_until > now)
            for remote, repository, pending, oldest, tag, digest, attempts, next_attempt, last_error, lease_until
            in rows]
