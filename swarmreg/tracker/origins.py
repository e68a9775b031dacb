"""Metainfo the tracker fetches from origins and caches, and the origins that seed each blob."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import attrs
import httpx
import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, BLOB_UNKNOWN, UNAVAILABLE, SwarmregError
from swarmreg.names import validate_namespace
from swarmreg.origin.client import blob_url
from swarmreg.singleflight import SingleFlight
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.swarm.stats import PEER_ID_HEADER, PEER_PORT_HEADER
from swarmreg.tracker.messages import Peer
from swarmreg.tracker.peers import PeerStore

log = logging.getLogger(__name__)


@attrs.frozen
class KnownBlob:
    raw: bytes
    info_hash: str
    fetched: float  # trio.current_time() of the fetch from an origin


class OriginDirectory:
    """Fetches a blob's metainfo from the origins (at most once at a time per blob),
    caches it, and records the origin that answered as a seeding peer.

    The fetches run in the tracker's nursery, given with ``bind`` once it is open.
    """

    def __init__(self, http: httpx.AsyncClient, origins: Sequence[Address], peers: PeerStore,
                 cache_size: int, on_seeder: Callable[[str, Peer], None] = lambda info_hash, peer: None,
                 inline_max: int = 0, inline_budget: int = 0, scheme: str = "http") -> None:
        self.http = http
        self.scheme = scheme
        self.inline_max = inline_max
        self.inline_budget = inline_budget
        self._contents: OrderedDict[str, bytes] = OrderedDict()  # digest hex -> small blob, by recency
        self._content_bytes = 0
        self.on_seeder = on_seeder  # told of an origin that is new to a torrent
        self.origins = tuple(origins)
        self.peers = peers
        self.cache_size = cache_size
        self._cache: OrderedDict[str, KnownBlob] = OrderedDict()
        # In the tracker's nursery, not the first requester's task: a connection that
        # closes does not take a fetch other connections wait for with it.
        self._flights = SingleFlight[str, None, KnownBlob]("metainfo fetch")

    def bind(self, nursery: trio.Nursery) -> None:
        """Run the fetches from the origins in ``nursery`` (the tracker's)."""
        self._flights.bind(nursery)

    def _ordered_origins(self, digest: Digest) -> list[Address]:
        # Rendezvous hashing: each blob asks the same origin first, spreading blobs over origins.
        return sorted(self.origins, key=lambda o: hashlib.sha256(f"{o}{digest}".encode()).digest())

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
        return await self._flights.run(digest.hex, partial(self._fetch, namespace, digest))

    def content(self, digest_text: str) -> bytes | None:
        """The small blob's bytes, if they are cached."""
        hex_ = digest_text.removeprefix("sha256:")
        data = self._contents.get(hex_)
        if data is not None:
            self._contents.move_to_end(hex_)
        return data

    async def _fetch_content(self, origin: Address, namespace: str, digest: Digest) -> None:
        """Cache a small blob's bytes (checked against its digest); failing is harmless: peers use the swarm."""
        url = blob_url(f"{self.scheme}://{origin}", namespace, digest)
        try:
            response = await self.http.get(url)
        except httpx.HTTPError:
            return
        if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != digest.hex:
            return
        self._contents[digest.hex] = response.content
        self._content_bytes += len(response.content)
        while self._content_bytes > self.inline_budget and self._contents:
            self._content_bytes -= len(self._contents.popitem(last=False)[1])

    async def _fetch(self, namespace: str, digest: Digest) -> KnownBlob:
        failures = []
        for origin in self._ordered_origins(digest):
            url = blob_url(f"{self.scheme}://{origin}", namespace, digest, "/metainfo")
            try:
                response = await self.http.get(url)
            except httpx.HTTPError as error:
                failures.append(f"{origin}: {type(error).__name__}")
                continue
            if response.status_code == 404:
                failures.append(f"{origin}: blob unknown")
                continue
            if response.status_code != 200:
                failures.append(f"{origin}: {response.status_code} {_reason(response)}")
                continue
            try:
                metainfo = Metainfo.parse(response.content, digest)
                seeder = Peer(response.headers[PEER_ID_HEADER], origin.host,
                              int(response.headers[PEER_PORT_HEADER]), complete=True, origin=True)
            except (SwarmregError, KeyError, ValueError) as error:
                failures.append(f"{origin}: bad metainfo response ({error})")
                continue
            known = KnownBlob(metainfo.raw, metainfo.info_hash, trio.current_time())
            if metainfo.size <= self.inline_max and digest.hex not in self._contents:
                await self._fetch_content(origin, namespace, digest)
            if self.peers.announce(known.info_hash, seeder, owner=("origin", str(origin)))[1]:
                self.on_seeder(known.info_hash, seeder)
            self._cache[digest.hex] = known
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return known
        if failures and all(f.endswith("blob unknown") for f in failures):
            raise SwarmregError(BLOB_UNKNOWN, detail={"digest": str(digest)})
        log.warning("metainfo for %s: %s", digest, "; ".join(failures))
        raise SwarmregError(BAD_GATEWAY if failures else UNAVAILABLE,
                            f"no origin could provide the blob's metainfo: {'; '.join(failures) or 'none configured'}")


def _reason(response: httpx.Response) -> str:
    try:
        return response.json()["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text[:200]
