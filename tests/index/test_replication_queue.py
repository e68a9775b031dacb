"""The replication queue in the index's database, each test on SQLite and on a real PostgreSQL:
queued in the tag's own transaction, claimed in order per repository, leased so that two index
nodes never hold one entry at once, retried with its error kept, its status; the migration from
schema version 2."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from swarmreg.errors import MANIFEST_UNKNOWN, SwarmregError
from swarmreg.index.replication_queue import QueueEntry, ReplicationQueue, queue_status
from swarmreg.index.store import SCHEMA_VERSION, IndexStore
from tests.index.helpers import MANIFEST, digest, old_database

B, C = "http://b.example:15000", "https://c.example"


async def tagged(store: IndexStore, repository: str, tag: str, n: object, remotes: tuple[str, ...] = (B,)) -> bool:
    await store.put_manifest(repository, digest(n), media_type=MANIFEST, size=5)
    return await store.put_tag(repository, tag, digest(n), replicate=remotes)


async def queued(store: IndexStore) -> list[tuple[object, ...]]:
    return await store.read(lambda db: db.execute(
        "SELECT remote, repository, tag, digest, attempts FROM replication ORDER BY id").fetchall())


async def test_a_tag_that_changes_is_queued_for_each_remote_in_its_own_transaction(store: IndexStore) -> None:
    assert await tagged(store, "team/app", "v1", "m1", (B, C))
    assert await tagged(store, "team/app", "v1", "m2", (B,))  # moved
    assert not await tagged(store, "team/app", "v1", "m2", (B, C))  # put again as it is: no echo
    assert await tagged(store, "other/app", "v1", "m1", ())  # no rule matched
    with pytest.raises(SwarmregError) as refused:  # a tag refused queues nothing
        await store.put_tag("team/app", "v2", digest("never pushed"), replicate=(B,))
    assert refused.value.code is MANIFEST_UNKNOWN
    assert await queued(store) == [(B, "team/app", "v1", str(digest("m1")), 0),
                                   (C, "team/app", "v1", str(digest("m1")), 0),
                                   (B, "team/app", "v1", str(digest("m2")), 0)]


async def test_each_repository_sends_in_order_one_entry_at_a_time(store: IndexStore) -> None:
    for n in range(3):
        await tagged(store, "team/a", f"v{n}", f"a{n}")
        await tagged(store, "team/b", f"v{n}", f"b{n}")
    queue = ReplicationQueue(store, "node-a", lease=60)
    first = await queue.claim(B, 10)
    assert [(e.repository, e.tag) for e in first.entries] == [("team/a", "v0"), ("team/b", "v0")]
    assert (await queue.claim(B, 10)).entries == (), "the next of a repository waits for its head"
    assert (await queue.claim(C, 10)).entries == (), "another remote's queue is its own"
    assert await queue.finish(first.entries[0])
    assert [(e.repository, e.tag) for e in (await queue.claim(B, 10)).entries] == [("team/a", "v1")]
    limited = ReplicationQueue(store, "node-b", lease=60)
    await queue.release()
    assert len((await limited.claim(B, 1)).entries) == 1, "at most the limit"


async def test_a_failure_is_kept_and_retried_after_its_delay(store: IndexStore) -> None:
    await tagged(store, "team/a", "v1", "a")
    queue = ReplicationQueue(store, "node-a", lease=60)
    entry = (await queue.claim(B, 4)).entries[0]
    await queue.retry(entry, "remote refused the credentials (401)", delay=0.3)
    claimed = await queue.claim(B, 4)
    assert claimed.entries == () and claimed.next_due is not None, "not before its delay"
    status = await queue_status(store, (B,), None)
    [remote] = status["remotes"]
    assert remote["pending"] == 1 and remote["queues"][0]["attempts"] == 1
    assert remote["queues"][0]["last_error"] == "remote refused the credentials (401)"
    await trio.sleep(0.4)
    again = (await queue.claim(B, 4)).entries
    assert [(e.id, e.attempts) for e in again] == [(entry.id, 1)]


async def test_two_nodes_never_hold_one_entry_and_keep_each_repositorys_order(
        new_store: Callable[[], IndexStore]) -> None:
    async with new_store() as setup:
        for n in range(4):
            for repository in ("team/a", "team/b", "team/c", "team/d", "team/e"):
                await tagged(setup, repository, f"v{n}", f"{repository}{n}")
        total = len(await queued(setup))
    held: dict[int, str] = {}
    done: list[QueueEntry] = []

    async def node(name: str) -> None:
        async with new_store() as store:
            queue = ReplicationQueue(store, name, lease=60)
            while len(done) < total:
                claimed = await queue.claim(B, 3)
                for entry in claimed.entries:
                    assert entry.id not in held, f"{entry} is held by {held.get(entry.id)} too"
                    held[entry.id] = name
                await trio.sleep(0.01)
                for entry in claimed.entries:
                    del held[entry.id]
                    assert await queue.finish(entry)
                    done.append(entry)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node, "node-a")
            nursery.start_soon(node, "node-b")
    assert len({entry.id for entry in done}) == total == len(done)
    for repository in ("team/a", "team/b", "team/c", "team/d", "team/e"):
        tags = [entry.tag for entry in done if entry.repository == repository]
        assert tags == ["v0", "v1", "v2", "v3"]


async def test_a_lapsed_lease_frees_the_entry_and_its_old_holder_cannot_finish_it(store: IndexStore) -> None:
    await tagged(store, "team/a", "v1", "a")
    dead = ReplicationQueue(store, "dead-node", lease=0.2)
    entry = (await dead.claim(B, 4)).entries[0]
    other = ReplicationQueue(store, "other-node", lease=60)
    assert (await other.claim(B, 4)).entries == ()
    await trio.sleep(0.3)
    taken = (await other.claim(B, 4)).entries
    assert [e.id for e in taken] == [entry.id]
    assert not await dead.renew(entry) and not await dead.finish(entry)
    assert (await queue_status(store, (B,), None))["remotes"][0]["queues"][0]["sending"]
    assert await other.finish(taken[0])


async def test_a_node_that_starts_again_takes_its_own_leases_back(store: IndexStore) -> None:
    await tagged(store, "team/a", "v1", "a")
    await tagged(store, "team/b", "v1", "b")
    before = ReplicationQueue(store, "node-a", lease=60)
    assert len((await before.claim(B, 4)).entries) == 2
    assert await ReplicationQueue(store, "node-b", lease=60).release() == 0, "another node's leases are not its own"
    again = ReplicationQueue(store, "node-a", lease=60)
    assert await again.release() == 2
    assert len((await again.claim(B, 4)).entries) == 2


async def test_the_status_has_every_remote_its_repositories_and_their_heads(store: IndexStore) -> None:
    await tagged(store, "team/a", "v1", "a1", (B, "http://gone.example"))
    await tagged(store, "team/a", "v2", "a2")
    await tagged(store, "team/b", "v1", "b1")
    status = await queue_status(store, (B, C), None)
    remotes = {remote["remote"]: remote for remote in status["remotes"]}
    assert list(remotes) == sorted([B, C, "http://gone.example"]) and not status["truncated"]
    assert (remotes[C]["pending"], remotes[C]["queues"], remotes[C]["configured"]) == (0, [], True)
    assert (remotes["http://gone.example"]["configured"], remotes["http://gone.example"]["pending"]) == (False, 1)
    b = remotes[B]
    assert (b["pending"], b["repositories"]) == (3, 2)
    head = b["queues"][0]
    assert (head["repository"], head["pending"], head["tag"], head["digest"], head["attempts"], head["sending"]) == (
        "team/a", 2, "v1", str(digest("a1")), 0, False)
    assert head["oldest"] == b["oldest"] <= b["queues"][1]["oldest"]
    limited = await queue_status(store, (B,), 1)
    assert limited["truncated"] and sum(len(r["queues"]) for r in limited["remotes"]) == 1


def version_2(database: str) -> None:
    """A database as swarmreg with schema version 2 left it, a tag in it."""
    old_database(database, 2, [
        ("INSERT INTO manifests (repository, digest, media_type, size, created) VALUES ('team/app', ?, ?, 5, "
         "'2025-01-01T00:00:00.000Z')", (str(digest("old")), MANIFEST)),
        ("INSERT INTO tags VALUES ('team/app', 'v1', ?, '2025-01-01T00:00:00.000Z')", (str(digest("old")),))])


async def test_a_version_2_database_is_migrated_with_an_empty_queue(
        database: str, new_store: Callable[[], IndexStore]) -> None:
    version_2(database)
    async with new_store() as store:
        assert await store.schema_version() == SCHEMA_VERSION == 3
        assert await store.get_tag("team/app", "v1") == digest("old")
        assert await queued(store) == []
        assert await store.put_tag("team/app", "v2", digest("old"), replicate=(B,))
        assert await queued(store) == [(B, "team/app", "v2", str(digest("old")), 0)]
