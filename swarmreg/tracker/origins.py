"""Metainfo the tracker fetches from origins and caches, and the origins that seed each blob."""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import (
    BAD_GATEWAY,
    BLOB_UNKNOWN,
    TOOMANYREQUESTS,
    UNAVAILABLE,
    UPSTREAM_ERROR,
    UPSTREAM_UNAVAILABLE,
    ErrorCode,
    SwarmregError,
)
from swarmreg.names import validate_namespace
from swarmreg.origin.client import OriginClient, Pending
from swarmreg.singleflight import SingleFlight
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.store import Store
from swarmreg.tracker.wire import Peer

log = logging.getLogger(__name__)


async def _nobody(info_hash: str, peer: Peer) -> None:
    pass

# Codes an origin answers for an upstream registry's trouble, which the agent passes on as they are.
_UPSTREAM_TROUBLE = frozenset({UPSTREAM_UNAVAILABLE, UPSTREAM_ERROR, TOOMANYREQUESTS})


@attrs.frozen
class KnownBlob:
    raw: bytes
    info_hash: str
    fetched: float  # trio.current_time() of the fetch from an origin


@attrs.frozen
class RelayOffer:
    """An origin fetching the blob offers to stream it as it arrives: its base URL, the size."""

    url: str
    size: int


class OriginDirectory:
    """Fetches a blob's metainfo from the origins (at most once at a time per blob),
    caches it, and records the origin that answered as a seeding peer, for as long as the
    metainfo stays in the cache (the peer store's origin entries are bounded with it).

    The fetches run in the tracker's nursery, given with ``bind`` once it is open.
    """

    def __init__(self, origins: OriginClient, peers: Store,
                 cache_size: int, on_seeder: Callable[[str, Peer], Awaitable[None]] = _nobody,
                 inline_max: int = 0, inline_budget: int = 0, replicas: int = 1) -> None:
        self.inline_max = inline_max
        self.replicas = replicas  # origin.replicas: how many origins own each blob, and seed it
        self.inline_budget = inline_budget
        self._contents: OrderedDict[str, bytes] = OrderedDict()  # digest hex -> small blob, by recency
        self._content_bytes = 0
        self.on_seeder = on_seeder  # told of an origin that is new to a torrent
        self.origins = origins  # of the ring of origins: each blob's are asked in its ring order
        self.peers = peers
        self.cache_size = cache_size
        self._cache: OrderedDict[str, KnownBlob] = OrderedDict()
        # In the tracker's nursery, not the first requester's task: a connection that
        # closes does not take a fetch other connections wait for with it.
        self._flights = SingleFlight[str, None, KnownBlob]("metainfo fetch")
        # Per blob, the lock its relay asks take turns on (metainfo_or_relay); gone when unused.
        self._relay_turns: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None  # the tracker's: asking the other owners to seed

    @staticmethod
    def _owner(origin: OriginClient) -> str:
        """Whose the origin's entries in the peer store are (an origin's, not a connection's)."""
        return f"origin:{origin.address}"

    @property
    def _owners(self) -> frozenset[str]:
        """The owners of the entries of every origin the ring ever had."""
        return frozenset(f"origin:{member}" for member in self.origins.ring.seen)

    def bind(self, nursery: trio.Nursery) -> None:
        """Run the fetches from the origins in ``nursery`` (the tracker's)."""
        self._flights.bind(nursery)
        self._nursery = nursery

    def _ordered_origins(self, digest: Digest) -> list[OriginClient]:
        # The blob's owners first (rendezvous hashing; the live ones before those down), then
        # the other origins, which may find it in their backends.
        return [self.origins.at(member) for member in self.origins.ring.order(str(digest))]

    async def forget(self, digest_hex: str) -> bool:
        """An origin removed the blob: drop its cached metainfo and content, and the origins'
        entries in its torrent (the next ask goes to the origins again); False if it was not cached."""
        if (content := self._contents.pop(digest_hex, None)) is not None:
            self._content_bytes -= len(content)
        known = self._cache.pop(digest_hex, None)
        if known is None:
            return False
        await self.peers.forget(known.info_hash, self._owners)
        return True

    async def metainfo(self, namespace: str, digest_text: str, *, refresh: bool = False) -> KnownBlob:
        """The blob's metainfo; BLOB_UNKNOWN if no origin has it, UNAVAILABLE if none answers.

        ``refresh`` asks the origins again even when it is cached: an origin asked
        for a blob's metainfo also makes sure it holds and seeds the blob.
        """
        validate_namespace(namespace)
        digest = Digest.parse(digest_text)
        if not refresh and (known := self._cache.get(digest.hex)) is not None:
            self._cache.move_to_end(digest.hex)
            return known
        return await self._flights.run(digest.hex, partial(self._fetch_known, namespace, digest))

    async def metainfo_or_relay(self, namespace: str, digest_text: str) -> KnownBlob | RelayOffer:
        """The blob's metainfo as ``metainfo`` gives it or, while an origin fetches the blob from
        its backend and offers to stream it as it arrives, where from (a RelayOffer).

        Each ask is one request to an origin (the origins past the first only when it fails; a
        second one to it for a blob small enough to send inline), whose metainfo answer is
        cached and recorded as ``metainfo``'s; the asks for one blob
        go one at a time, so those past the origin's relay limit wait here, not in a request
        each, and find the metainfo cached when their turn comes.
        """
        validate_namespace(namespace)
        digest = Digest.parse(digest_text)
        lock = self._relay_turns.setdefault(digest.hex, trio.Lock())
        try:
            async with lock:
                if (known := self._cache.get(digest.hex)) is not None:
                    self._cache.move_to_end(digest.hex)
                    return known
                return await self._fetch(namespace, digest, relay=True)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._relay_turns.pop(digest.hex, None)

    def content(self, digest_text: str) -> bytes | None:
        """The small blob's bytes, if they are cached."""
        try:
            hex_ = Digest.parse(digest_text).hex
        except SwarmregError:
            return None
        data = self._contents.get(hex_)
        if data is not None:
            self._contents.move_to_end(hex_)
        return data

    async def _fetch_content(self, origin: OriginClient, namespace: str, digest: Digest) -> None:
        """Cache a small blob's bytes (checked against its digest); failing is harmless: peers use the swarm."""
        try:
            content = await origin.read(namespace, digest)
        except SwarmregError:
            return
        if Digest.of(content, digest.algorithm) != digest:
            return
        self._contents[digest.hex] = content
        self._content_bytes += len(content)
        while self._content_bytes > self.inline_budget and self._contents:
            self._content_bytes -= len(self._contents.popitem(last=False)[1])

    async def _record_seeder(self, info_hash: str, seeder: Peer, origin: OriginClient) -> None:
        # With the store down (it logs that) the metainfo still serves; the next refresh records the origin.
        with contextlib.suppress(SwarmregError):
            if (await self.peers.announce(info_hash, seeder, owner=self._owner(origin)))[1]:
                await self.on_seeder(info_hash, seeder)

    async def _other_seeders(self, namespace: str, digest: Digest, info_hash: str, asked: Address) -> None:
        """Record the blob's other live owners that hold it as seeders too (asking one for the
        metainfo makes it seed): a download then has another origin at hand when one dies. One
        that does not hold it yet (its replica is on the way) is not asked: it would fetch it.
        Background work: what fails is skipped (logged at debug level)."""
        for member in self.origins.ring.owners(str(digest), self.replicas):
            if member == asked or not self.origins.ring.live(member):
                continue
            origin = self.origins.at(member)
            try:
                if await origin.size(namespace, digest, local=True) is None:
                    continue
                served = await origin.metainfo(namespace, digest)
                if Metainfo.parse(served.raw, digest).info_hash != info_hash:
                    continue  # another piece length: another torrent
                seeder = Peer(served.peer_id, member.host, served.peer_port, complete=True, origin=True)
            except (SwarmregError, ValueError) as error:
                log.debug("origin %s as another seeder of %s: %s", member, digest, error)
                continue
            await self._record_seeder(info_hash, seeder, origin)

    async def _fetch_known(self, namespace: str, digest: Digest) -> KnownBlob:
        known = await self._fetch(namespace, digest)
        assert isinstance(known, KnownBlob), "no relay without asking for one"
        return known

    async def _fetch(self, namespace: str, digest: Digest, *, relay: bool = False) -> KnownBlob | RelayOffer:
        """Ask the origins in turn for the metainfo (with ``relay``, for it or a relay offer);
        the first answer is cached, its origin recorded as a seeder."""
        # Each failure as logged (with the origin's address) and as answered (without: the
        # answer reaches the agent and, through it, registry clients).
        failures: list[str] = []
        answers: list[str] = []
        codes: list[ErrorCode] = []
        for origin in self._ordered_origins(digest):
            try:
                if relay:
                    answer = await origin.metainfo_or_pending(namespace, digest)
                    if isinstance(answer, Pending) and answer.size > self.inline_max:
                        return RelayOffer(answer.base, answer.size)
                    # A small blob comes inline with its metainfo, which is only a moment away.
                    served = await origin.metainfo(namespace, digest) if isinstance(answer, Pending) else answer
                else:
                    served = await origin.metainfo(namespace, digest)
                metainfo = Metainfo.parse(served.raw, digest)
                seeder = Peer(served.peer_id, origin.address.host, served.peer_port, complete=True, origin=True)
            except SwarmregError as error:
                codes.append(error.code)
                failures.append(f"{origin.address}: {error.message}")
                answers.append(error.message or error.code.message)
                continue
            except ValueError as error:  # a seeder the peer wire could not reach
                # Its text is logged (with the others below), not sent to the agent.
                log.warning("metainfo for %s from origin %s: bad seeder: %s", digest, origin.address, error)
                failures.append(f"{origin.address}: bad metainfo response")
                answers.append("bad metainfo response")
                codes.append(BAD_GATEWAY)
                continue
            known = KnownBlob(metainfo.raw, metainfo.info_hash, trio.current_time())
            if metainfo.size <= self.inline_max and digest.hex not in self._contents:
                await self._fetch_content(origin, namespace, digest)
            self._cache[digest.hex] = known
            self._cache.move_to_end(digest.hex)  # a refreshed entry is a recent one
            # With the store down (it logs that) the metainfo still serves; the next refresh records the origin.
            await self._record_seeder(known.info_hash, seeder, origin)
            if self._nursery is not None and self.replicas > 1 and metainfo.size > self.inline_max:
                self._nursery.start_soon(self._other_seeders, namespace, digest, known.info_hash, origin.address)
            while len(self._cache) > self.cache_size:
                # The origins' entries go with the metainfo: they never expire, and the next
                # announce of this blob fetches it again, which records the seeding origin anew.
                evicted = self._cache.popitem(last=False)[1]
                with contextlib.suppress(SwarmregError):
                    await self.peers.forget(evicted.info_hash, self._owners)
            return known
        if codes and all(code is BLOB_UNKNOWN for code in codes):
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
        log.warning("metainfo for %s: %s", digest, "; ".join(failures))
        # An upstream registry's trouble as the origins report it, when they all do (503
        # UPSTREAM_UNAVAILABLE: a client's retry logic tells it from a broken gateway); else ours.
        failed = {code for code in codes if code is not BLOB_UNKNOWN}
        passed_on = failed.pop() if len(failed) == 1 and failed <= _UPSTREAM_TROUBLE else None
        raise SwarmregError(passed_on or (BAD_GATEWAY if failures else UNAVAILABLE),
                            "no origin could provide the blob's metainfo: "
                            f"{'; '.join(dict.fromkeys(answers)) or 'none configured'}")
