"""An origin's share of keeping each blob at its owners (docs/cluster.md, "Replication").

A blob committed here from a client (not a replica another origin sent) is owed to the blob's
other owners (``origin.replicas`` of the ring of ``[cluster] origins``). The obligation is a file
under ``data_dir/replication`` written before the commit is answered, so a restart does not lose
it; the replicator sends each blob to every owner that lacks it (streaming its file, as a replica
the receiver does not send on) and removes the file once all have it. Owners that are down keep
the file, retried when the ring changes (one comes back) and every RETRY seconds.

A change of the ring's members (a DNS name's records, or a restart with another list) starts a
repair: the blobs held here whose owners changed go into the queue; the others do not move. So
does a member coming back (it may have lost its disk): each of its blobs is offered to it by one
origin, the first other live owner.
On a miss, the origin first asks the blob's other live origins for it (their own stores only),
then its backend.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_UNKNOWN, SwarmregError, log_failure, os_error
from swarmreg.origin.client import OriginClient, UpstreamBody
from swarmreg.store.blobstore import BlobStore, fsync_path

log = logging.getLogger(__name__)

# Seconds between passes over obligations that some owner could not take.
RETRY = 10.0
# Blobs sent at once.
PARALLEL = 2
_TEMP = ".tmp-"
_RING = "ring.json"


def _name(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}"


class ReplicationQueue:
    """The blobs owed to other owners: one file each (named by digest, holding the namespace)."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync

    def prepare(self) -> None:
        """Create the directory and drop the temp files a crash left; blocking."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.glob(f"{_TEMP}*"):
            path.unlink(missing_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        temp = self.directory / f"{_TEMP}{name}"
        with open(temp, "wb") as file:
            file.write(data)
            if self.fsync:
                os.fsync(file.fileno())
        os.replace(temp, self.directory / name)
        if self.fsync:
            fsync_path(self.directory, directory=True)

    def add(self, namespace: str, digest: Digest) -> None:
        """Owe ``digest`` (of ``namespace``) to its other owners; blocking, durable when it returns."""
        self._write(_name(digest), namespace.encode())

    def remove(self, digest: Digest) -> None:
        (self.directory / _name(digest)).unlink(missing_ok=True)

    def entries(self) -> list[tuple[Digest, str]]:
        """Every obligation: (digest, namespace); blocking. Files that are not one are skipped."""
        found = []
        for path in sorted(self.directory.iterdir()):
            algorithm, dash, hex_ = path.name.partition("-")
            if not dash or path.name.startswith(_TEMP) or path.name == _RING:
                continue
            try:
                found.append((Digest.parse(f"{algorithm}:{hex_}"), path.read_text("utf-8")))
            except (SwarmregError, OSError, UnicodeDecodeError):
                log.warning("replication queue: skipping %s, which is no obligation", path.name)
        return found

    def __len__(self) -> int:
        return len(self.entries())

    def members(self) -> tuple[Address, ...] | None:
        """The ring's members as last seen (None: never recorded); blocking."""
        try:
            return tuple(Address.parse(text) for text in json.loads((self.directory / _RING).read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError) as error:
            log.warning("replication queue: the recorded ring is unreadable (%s): repairing every blob", error)
            return ()

    def record_members(self, members: tuple[Address, ...]) -> None:
        self._write(_RING, json.dumps([str(member) for member in members]).encode())


def _local_address(host: str) -> bool:
    """Whether ``host`` is an address of this machine (it can be bound)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.bind(infos[0][4])
    except OSError as error:
        return error.errno == errno.EADDRINUSE
    return True


class PeerStream:
    """A blob streamed from another origin, as a backend's BlobStream."""

    def __init__(self, body: UpstreamBody) -> None:
        self.body = body
        self.size = body.end

    async def __aenter__(self) -> PeerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.body.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self.body)


class Replicator:
    """Sends the blobs committed here to their other owners (see the module); a service."""

    def __init__(self, ring: Ring, client: OriginClient, store: BlobStore, queue: ReplicationQueue, *,
                 replicas: int, me: Callable[[], Address], namespace_of: Callable[[Digest], str]) -> None:
        self.ring = ring
        self.client = client
        self.store = store
        self.queue = queue
        self.replicas = replicas
        self._me = me
        self.namespace_of = namespace_of
        self._wake = trio.Event()
        self._self: dict[Address, bool] = {}  # is_self's answers
        self.sent = 0  # replicas sent

    def is_self(self, member: Address) -> bool:
        """Whether ``member`` of the ring is this origin (its listening address, or a local one
        at its port when it listens on every address)."""
        if (known := self._self.get(member)) is None:
            me = self._me()
            known = self._self[member] = member == me or (
                member.port == me.port and me.host in ("0.0.0.0", "::", "") and _local_address(member.host))
        return known

    def others(self, digest: Digest) -> list[Address]:
        """Where the blob goes, but here: its owners, and while some are down the live origins
        next in its ring order in their stead (the replication factor holds during an outage;
        the owners that are down get it when they are back)."""
        ranked = rank(str(digest), self.ring.members)
        # This origin is up, whatever its own ring's probes thought while it started.
        stand_ins = [m for m in ranked if self.ring.live(m) or self.is_self(m)][:self.replicas]
        return [m for m in dict.fromkeys([*ranked[:self.replicas], *stand_ins]) if not self.is_self(m)]

    async def enqueue(self, namespace: str, digest: Digest) -> None:
        """Owe the blob to its other owners (durably, before this returns); STORAGE_FULL when the
        obligation cannot be written (the client's retry of the upload records it)."""
        try:
            await trio.to_thread.run_sync(self.queue.add, namespace, digest)
        except OSError as error:
            raise os_error(error, "recording the blob's replication") from None
        self._wake.set()

    # -- reads from the other origins ---------------------------------------------------------

    async def open_from_others(self, namespace: str, digest: Digest) -> PeerStream | None:
        """The blob streaming from the first other live origin that holds it (owners first), or
        None. Only their stores are asked: two origins that both miss never wait on each other."""
        for member in self.ring.order(str(digest)):
            if self.is_self(member) or not self.ring.live(member):
                continue
            try:
                return PeerStream(await self.client.at(member).open(namespace, digest, local=True))
            except SwarmregError as error:
                if error.code is not BLOB_UNKNOWN:
                    log.info("origin %s could not give %s: %s", member, digest, error.message)
        return None

    # -- the service -----------------------------------------------------------------------------

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what is owed until ``stop`` (what is left stays in the queue for the next start)."""
        await trio.to_thread.run_sync(self.queue.prepare)
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_ring)
            nursery.start_soon(self._work)
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _work(self) -> None:
        while True:
            self._wake = trio.Event()
            left = await self._pass()
            with trio.move_on_after(RETRY if left else float("inf")):
                await self._wake.wait()

    async def _follow_ring(self) -> None:
        """Wake the queue whenever the ring changes; repair when its members changed, or when
        members came back (found up after being down, or restarted: perhaps on an empty disk)."""
        version = self.ring.version
        seen = dict(self.ring.comebacks)
        while True:
            comebacks = dict(self.ring.comebacks)
            returned = {member for member, count in comebacks.items() if count != seen.get(member, 0)}
            try:
                await self._repair(returned)
            except Exception as error:  # background work: logged, never raised
                log_failure(log, "replication repair", error)
            seen = comebacks
            self._wake.set()
            version = await self.ring.wait_changed(version)

    async def _repair(self, returned: set[Address]) -> None:
        """Queue the blobs held here whose owners changed since the members were last recorded,
        and those a member that ``returned`` owns whose first other live owner this origin is
        (one origin offers each: a blob the member holds costs one 409)."""
        members = self.ring.members
        if not members:
            return
        before = await trio.to_thread.run_sync(self.queue.members)
        previous = before if before is not None and before != members else None
        if previous is not None or returned:
            await self._queue_moved(previous, members, returned)
        if before != members:  # after the scan: a repair cut short by a crash runs again
            await trio.to_thread.run_sync(self.queue.record_members, members)

    async def _queue_moved(self, previous: tuple[Address, ...] | None, members: tuple[Address, ...],
                           returned: set[Address]) -> None:
        """Queue the blobs whose owners differ from those among the ``previous`` members (when
        the members changed), else those the ``returned`` members own that this origin offers."""
        digests = await trio.to_thread.run_sync(lambda: list(self.store.digests()))
        queued = 0
        for digest in digests:
            owners = rank(str(digest), members)[:self.replicas]
            if previous is not None:
                due = rank(str(digest), previous)[:self.replicas] != owners
            else:
                offering = [m for m in owners if m not in returned and (self.ring.live(m) or self.is_self(m))]
                due = bool(returned & set(owners)) and bool(offering) and self.is_self(offering[0])
            if not due:
                continue
            # The namespace its metainfo was cached with; a blob without one (the empty blob,
            # which has no torrent) is left where it is, and logged as not moved.
            if namespace := self.namespace_of(digest):
                await trio.to_thread.run_sync(self.queue.add, namespace, digest)
                queued += 1
            else:
                log.info("repair: %s has no recorded namespace, not moved", digest)
        if previous is not None:
            log.info("the ring of origins changed (%d to %d members): %d of %d blob(s) held here have new "
                     "owners", len(previous), len(members), queued, len(digests))
        else:
            log.info("origin(s) %s came back: %d of %d blob(s) held here are offered to them",
                     ", ".join(sorted(map(str, returned))), queued, len(digests))

    async def _pass(self) -> int:
        """Try every obligation once; how many are left."""
        entries = await trio.to_thread.run_sync(self.queue.entries)
        left = 0
        limiter = trio.CapacityLimiter(PARALLEL)

        async def one(digest: Digest, namespace: str) -> None:
            nonlocal left
            async with limiter:
                try:
                    done = await self._replicate(digest, namespace)
                except Exception as error:  # a full disk, a bug: logged, tried again later
                    log_failure(log, f"replicating {digest}", error)
                    done = False
                left += not done

        async with trio.open_nursery() as nursery:
            for digest, namespace in entries:
                nursery.start_soon(one, digest, namespace)
        return left

    async def _replicate(self, digest: Digest, namespace: str) -> bool:
        """Send the blob to each other owner; True when all have it (or it is no longer held here)."""
        if self.store.size(digest) is None:  # collected (or never held): nothing to send
            await trio.to_thread.run_sync(self.queue.remove, digest)
            return True
        done = True
        for target in self.others(digest):
            if not self.ring.live(target):
                done = False
                continue
            try:
                sent = await self.client.at(target).upload_file(namespace, digest, self.store.path(digest),
                                                                through=False, replica=True)
            except SwarmregError as error:
                log.warning("replicating %s to origin %s: %s (tried again later)", digest, target, error.message)
                done = False
                continue
            except FileNotFoundError:  # collected meanwhile
                break
            if sent:
                self.sent += 1
                log.info("replicated %s to origin %s", digest, target)
        if done:
            await trio.to_thread.run_sync(self.queue.remove, digest)
        return done

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent}
