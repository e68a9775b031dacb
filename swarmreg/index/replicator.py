"""Replication across clusters (``[[index.replicate]]``, docs/replication.md): the index role's
service that sends every queued tag, with its manifest and blobs, to the remote cluster's registry.

Per remote, up to REPOSITORIES_AT_ONCE repositories at once, each in the order its tags were
recorded (swarmreg.index.replication_queue). An entry whose tag points elsewhere by the time it
is sent (moved: a later entry carries it; deleted) is dropped unsent. Otherwise the remote gets,
for each manifest (an image index's child manifests first): the blobs it lacks (HEAD first),
streamed from this cluster's origins; the manifest by digest; then the tag. A failure is retried
with exponential backoff up to the rule's max_backoff, its error kept for ``swarmreg replication
status``; an entry leaves the queue only once the remote took the tag, so neither side's restart
loses one (at least once, in order per repository).
"""

from __future__ import annotations

import logging
import os
import random
import re
import secrets
import ssl
from collections.abc import Sequence
from contextlib import AsyncExitStack, aclosing
from datetime import UTC, datetime
from pathlib import Path

import trio

from swarmreg.config import ReplicateRule
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, MANIFEST_INVALID, SwarmregError
from swarmreg.index.remote import RemoteRegistry
from swarmreg.index.replication_queue import QueueEntry, ReplicationQueue
from swarmreg.index.store import IndexStore
from swarmreg.oci.manifest import parse_manifest
from swarmreg.origin.client import OriginClient

log = logging.getLogger(__name__)

# Seconds a claimed entry stays this node's without a renewal; renewed every third of it while sent.
LEASE = 30.0
# Seconds between looks at the queue when nothing wakes a remote's worker (entries recorded
# through another index node, a lease of a node that died lapsing).
POLL = 5.0
REPOSITORIES_AT_ONCE = 4
# The first retry's delay (seconds), doubled per failure up to the rule's max_backoff.
FIRST_RETRY = 1.0
# An image index may name indexes; deeper nesting is not sent (as pull-through and preheat refuse it).
MAX_DEPTH = 2


def retry_delay(attempts: int, max_backoff: float) -> float:
    """Seconds before the next try of an entry that failed ``attempts`` times: doubling from
    FIRST_RETRY, capped at ``max_backoff``, less up to a fifth at random (so entries that failed
    together do not all come back at once)."""
    return min(max_backoff, FIRST_RETRY * 2.0 ** min(attempts - 1, 30)) * random.uniform(0.8, 1.0)


def node_id(path: Path) -> str:
    """This index node's id, kept in ``path`` (made at the first start): a node that starts again
    takes its own leases back at once instead of waiting for them to lapse."""
    try:
        text = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return text
    except FileNotFoundError:
        pass
    made = secrets.token_hex(16)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(made + "\n")
    os.replace(temp, path)
    return made


class ReplicationRules:
    """Which remotes a repository's tags go to: the rules whose ``repository`` matches its whole name."""

    def __init__(self, rules: Sequence[ReplicateRule]) -> None:
        self.rules = tuple(rules)
        self._patterns = [(re.compile(rule.repository), rule.remote) for rule in rules]

    @property
    def remotes(self) -> tuple[str, ...]:
        return tuple(rule.remote for rule in self.rules)

    def remotes_for(self, repository: str) -> tuple[str, ...]:
        return tuple(remote for pattern, remote in self._patterns if pattern.fullmatch(repository))


class Replicator:
    """Sends the queue to the remotes of ``rules``, reading manifests and blobs from ``origin``,
    until ``stop`` is set. ``node`` is this index node's id; ``cluster_tls`` its cluster client
    context, for rules with ``cluster_tls``."""

    def __init__(self, store: IndexStore, rules: ReplicationRules, origin: OriginClient, node: str, *,
                 stop: trio.Event, cluster_tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.rules = rules
        self.origin = origin
        self.queue = ReplicationQueue(store, node, LEASE)
        self.stop = stop
        self.cluster_tls = cluster_tls
        self._workers: dict[str, _RemoteWorker] = {}

    @property
    def remotes(self) -> tuple[str, ...]:
        """Every remote a rule names."""
        return self.rules.remotes

    def remotes_for(self, repository: str) -> tuple[str, ...]:
        """The remotes a tag of ``repository`` is queued for."""
        return self.rules.remotes_for(repository)

    def wake(self, remotes: Sequence[str]) -> None:
        """Entries for ``remotes`` were just queued: look at once, not at the next poll."""
        for remote in remotes:
            if (worker := self._workers.get(remote)) is not None:
                worker.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send until ``stop`` is set; entries being sent then are left queued (their leases given up)."""
        try:
            if released := await self.queue.release():
                log.info("replication: %d entr%s this node was sending when it stopped are queued again",
                         released, "y" if released == 1 else "ies")
        except SwarmregError as error:  # the database is down: the leases lapse by themselves
            log.warning("replication: cannot take this node's leases back: %s", error.message)
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            for rule in self.rules.rules:
                remote = await stack.enter_async_context(RemoteRegistry(rule, cluster_tls=self.cluster_tls))
                worker = self._workers[rule.remote] = _RemoteWorker(self, rule, remote)
                nursery.start_soon(worker.run)
            task_status.started()
            await self.stop.wait()
            nursery.cancel_scope.cancel()


class _RemoteWorker:
    """One remote's sending: claims the due heads of its queue, sends each in a task of its own."""

    def __init__(self, replicator: Replicator, rule: ReplicateRule, remote: RemoteRegistry) -> None:
        self.replicator = replicator
        self.queue = replicator.queue
        self.rule = rule
        self.remote = remote
        self.sending: set[int] = set()
        self._wakeup = trio.Event()
        self._database_down = False
        self._nursery: trio.Nursery | None = None  # run's: the sends and their leases' renewals

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                self._wakeup = trio.Event()  # a wake from here on is not missed
                delay = POLL
                slots = REPOSITORIES_AT_ONCE - len(self.sending)
                if slots > 0:
                    try:
                        claimed = await self.queue.claim(self.rule.remote, slots)
                    except SwarmregError as error:
                        self._database_failed(error)
                    else:
                        self._database_down = False
                        for entry in claimed.entries:
                            self.sending.add(entry.id)
                            nursery.start_soon(self._send, entry)
                        if claimed.next_due is not None and len(claimed.entries) < slots:
                            delay = min(POLL, _seconds_until(claimed.next_due))
                with trio.move_on_after(delay):
                    await self._wakeup.wait()

    def _database_failed(self, error: SwarmregError) -> None:
        if not self._database_down:
            self._database_down = True
            log.warning("replication to %s: cannot read the queue: %s", self.rule.remote, error.message)

    async def _send(self, entry: QueueEntry) -> None:
        """Send ``entry`` while holding its lease; done, retried later, or given back on shutdown."""
        settled = False
        try:
            assert self._nursery is not None
            with trio.CancelScope() as sending:
                holding = trio.CancelScope()
                self._nursery.start_soon(self._hold, entry, sending, holding)
                try:
                    sent = await _Send(self.replicator, self.remote, entry).run()
                finally:
                    holding.cancel()
            if sending.cancelled_caught:
                log.warning("replication of %s:%s to %s: its lease was lost (the database was out of reach for "
                            "%g s): another node may send it", entry.repository, entry.tag, self.rule.remote, LEASE)
                settled = True  # that node's now, or anyone's once the lease lapsed
                return
            await self.queue.finish(entry)
            settled = True
            if sent:
                log.info("replicated %s:%s (%s) to %s", entry.repository, entry.tag, entry.digest, self.rule.remote)
            else:
                log.info("replication of %s:%s (%s) to %s: dropped, the tag has moved or gone since", entry.repository,
                         entry.tag, entry.digest, self.rule.remote)
        except Exception as error:  # noqa: BLE001 - background work: anything is recorded and retried
            message = _message(error)
            delay = retry_delay(entry.attempts + 1, self.rule.max_backoff)
            log.warning("replication of %s:%s to %s failed (attempt %d, next in %.0f s): %s", entry.repository,
                        entry.tag, self.rule.remote, entry.attempts + 1, delay, message)
            try:
                with trio.CancelScope(shield=True):
                    await self.queue.retry(entry, message, delay)
                settled = True
            except SwarmregError as recorded:  # the database: the lease lapses, the entry comes back
                log.warning("replication of %s:%s to %s: cannot record the failure: %s", entry.repository,
                            entry.tag, self.rule.remote, recorded.message)
        finally:
            if not settled:  # cancelled (shutting down): queued again, no attempt counted
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    try:
                        await self.queue.release(entry)
                    except SwarmregError:
                        pass  # the lease lapses by itself
            self.sending.discard(entry.id)
            self.wake()

    async def _hold(self, entry: QueueEntry, sending: trio.CancelScope, holding: trio.CancelScope) -> None:
        """Renew the lease every third of LEASE; cancel ``sending`` when it is lost (another node
        took the entry) or cannot be renewed before it lapses."""
        with holding:
            held_until = trio.current_time() + LEASE
            while True:
                await trio.sleep(LEASE / 3)
                try:
                    if not await self.queue.renew(entry):
                        sending.cancel()
                        return
                    held_until = trio.current_time() + LEASE
                except SwarmregError:
                    if trio.current_time() + LEASE / 3 > held_until:
                        sending.cancel()
                        return


class _Send:
    """One entry's trip to the remote."""

    def __init__(self, replicator: Replicator, remote: RemoteRegistry, entry: QueueEntry) -> None:
        self.store = replicator.store
        self.origin = replicator.origin
        self.remote = remote
        self.entry = entry
        self.repository = entry.repository

    async def run(self) -> bool:
        """Send the entry; False when it was not sent because its tag points elsewhere now."""
        entry = self.entry
        if await self.store.get_tag(entry.repository, entry.tag) != entry.digest:
            return False
        record = await self.store.get_manifest(entry.repository, entry.digest)
        if record is None:
            return False
        await self.remote.check()
        data = await self._manifest(entry.digest, record.media_type, 0)
        await self.remote.put_manifest(entry.repository, entry.tag, data, record.media_type)
        return True

    async def _manifest(self, digest: Digest, media_type: str, depth: int) -> bytes:
        """Send the manifest ``digest`` (its children, its blobs, itself by digest) unless the
        remote holds it; its bytes."""
        try:
            data = await self.origin.read(self.repository, digest)
        except SwarmregError as error:
            raise SwarmregError(error.code, f"manifest {digest} of {self.repository} cannot be read from this "
                                f"cluster's origins: {error.message}") from None
        if await self.remote.has_manifest(self.repository, str(digest)):
            return data
        manifest = parse_manifest(data, media_type, algorithm=digest.algorithm)
        if manifest.digest != digest:
            raise SwarmregError(BAD_GATEWAY, f"the origins' bytes of manifest {digest} of "
                                f"{self.repository} do not match its digest")
        for child in manifest.children:
            record = await self.store.get_manifest(self.repository, child)
            if record is None:
                continue  # an index may name manifests never pushed (the spec allows it): none to send
            if depth + 1 > MAX_DEPTH:
                raise SwarmregError(MANIFEST_INVALID, f"manifest {digest} of {self.repository} nests "
                                    f"indexes deeper than {MAX_DEPTH}")
            await self._manifest(child, record.media_type, depth + 1)
        for blob in manifest.blobs:
            await self._blob(blob)
        await self.remote.put_manifest(self.repository, str(digest), data, media_type)
        return data

    async def _blob(self, digest: Digest) -> None:
        if await self.remote.has_blob(self.repository, digest):
            return
        try:
            body = await self.origin.open(self.repository, digest)
        except SwarmregError as error:
            raise SwarmregError(error.code, f"blob {digest} of {self.repository} cannot be read from this "
                                f"cluster's origins: {error.message}") from None
        async with aclosing(body):
            await self.remote.upload_blob(self.repository, digest, body, body.end)


def _message(error: Exception) -> str:
    if isinstance(error, SwarmregError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _seconds_until(when: str) -> float:
    try:
        due = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return POLL
    return max(0.0, (due - datetime.now(UTC)).total_seconds())
