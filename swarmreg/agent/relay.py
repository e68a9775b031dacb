"""Blobs streamed from an origin while the origin still fetches them from their backend.

A BitTorrent v2 torrent exists only once every byte of the blob is in (its info-hash covers
every piece), so a blob an origin is still fetching from an upstream registry has no torrent
yet. An agent that asks the tracker for it may be told where to stream it instead (a Relay:
the origin's blob API, which serves its growing file as bytes arrive). One relay per blob per
agent, shared by every request for it: the bytes go to a temp file in the store, hashed as
they come, and clients stream from that growing file; the last byte only once the whole blob
matched its digest and is held. Then the agent asks for the metainfo (the torrent exists now)
and seeds the blob, so later agents get it from the swarm. A relay that fails (the origin's
fetch failed, it sent too few or wrong bytes) stores nothing and cuts its clients' responses;
the next request tries again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from urllib.parse import urlsplit

import httpx
import trio

from swarmreg.agent.downloads import Downloads
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, DIGEST_INVALID, SwarmregError
from swarmreg.node import Node
from swarmreg.origin.client import OriginClient, UpstreamBody
from swarmreg.origin.fetch import receive_blob
from swarmreg.singleflight import SingleFlight
from swarmreg.store.growing import GrowingBody, GrowingFile
from swarmreg.tracker.wire import Relay as RelaySource

log = logging.getLogger(__name__)

# Seconds a relay waits for the origin's next bytes: the origin's own fetch fails sooner when its
# upstream stalls (the backend's read timeout), and so does this relay, cut by the origin.
RELAY_READ_TIMEOUT = 300.0


class Relay(GrowingFile):
    """One blob on its way in from an origin; ``swarm`` when the tracker had its torrent instead."""

    swarm = False


class Relays:
    """Starts at most one Relay per blob, in the agent's nursery (a client that hangs up does not
    stop one that others stream from)."""

    def __init__(self, node: Node, downloads: Downloads, nursery: trio.Nursery) -> None:
        self.node = node
        self.downloads = downloads
        self._flights = SingleFlight[Digest, Relay, None](
            "relay", nursery, on_error=lambda relay, error: relay.fail(error))
        self.received = 0  # bytes streamed in from origins, kept or not

    async def relay(self, namespace: str, digest: Digest) -> Relay | None:
        """The blob's relay, once its size is known: the running one, or one the tracker offers
        now; None when the blob comes through the swarm (its metainfo is then cached) or is held."""
        flight = self._flights.running(digest)
        if flight is None:
            # Held, or its torrent known (a Download, or a prefetch about to start one): no relay.
            if (digest in self.node.store or self.node.metainfo.get(digest) is not None
                    or self.downloads.active(digest)):
                return None
            flight = self._flights.start(digest, partial(self._run, namespace, digest), Relay)
        relay = flight.state
        await relay.started.wait()
        if relay.error is not None:
            raise relay.error
        return None if relay.swarm else relay

    async def settle(self, digest: Digest) -> None:
        """Wait for the blob's relay to end, if one runs (however it ends)."""
        if (flight := self._flights.running(digest)) is not None:
            await flight.done.wait()

    async def body(self, relay: Relay, start: int, end: int) -> GrowingBody:
        """Bytes [start, end) of the relayed blob, streaming as they arrive."""
        return await relay.body(start, end, self.node.config.store.chunk_size)

    async def _run(self, namespace: str, digest: Digest, relay: Relay) -> None:
        reply = await self.downloads.tracker.metainfo(namespace, str(digest), relay=True)
        if reply.relay is None:  # the torrent exists: the swarm it is
            await self.downloads.accept(namespace, digest, reply)
            relay.swarm = True
            relay.started.set()
            return
        source = reply.relay
        log.info("relaying %s (%d bytes) from the origin at %s", digest, source.size, source.url)
        # The origin's reads need no cluster secret, and none is sent to an address the tracker
        # named; with [tls] the handshake checks the origin's cluster certificate (and ours).
        address = _origin_address(source, self.node.tls.client is not None)
        cache = self.downloads.cache
        await cache.reserve(digest, source.size)  # room first, as for a download
        try:
            await self._receive(namespace, digest, relay, source, address)
        except BaseException:
            cache.release(digest)
            raise
        cache.commit(digest, source.size)
        log.info("relayed %s (%d bytes)", digest, source.size)
        try:  # held and served already: seeding is a bonus that fails on its own
            await self.downloads.seed_held(namespace, digest)
        except SwarmregError as error:
            log.warning("seeding the relayed %s: %s", digest, error.message)

    async def _receive(self, namespace: str, digest: Digest, relay: Relay, source: RelaySource,
                       address: Address) -> None:
        """Stream the blob from the origin into the store, through ``relay``."""
        async with OriginClient(address, timeout=RELAY_READ_TIMEOUT, tls=self.node.tls.client) as origin:
            body = await origin.open(namespace, digest)
            try:
                if body.end != source.size:
                    raise SwarmregError(BAD_GATEWAY, f"the origin relays {body.end} bytes of a {source.size}-byte blob",
                                        {"digest": str(digest)})
                try:
                    await receive_blob(self.node.store, digest, source.size, self._counted(_chunks(body)),
                                       source="the origin's relay", growing=relay, metainfo=False)
                except SwarmregError as error:
                    if error.code is not DIGEST_INVALID:
                        raise
                    # The origin's fault, not the client's: DIGEST_INVALID would say the client sent a bad upload.
                    raise SwarmregError(BAD_GATEWAY, "the origin relayed bytes that do not match the digest",
                                        error.detail) from None
            finally:
                await body.aclose()


    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.received += len(chunk)
            yield chunk


def _origin_address(source: RelaySource, tls: bool) -> Address:
    """The origin's address in a Relay's URL, which must be this cluster's scheme (with [tls],
    https: the relayed bytes come only from a verified cluster member)."""
    try:
        url = urlsplit(source.url)
        if url.scheme != ("https" if tls else "http") or not url.hostname or url.port is None:
            raise ValueError(source.url)
        return Address(url.hostname, url.port)
    except ValueError:
        log.warning("the tracker offered a relay from %r", source.url[:200])
        raise SwarmregError(BAD_GATEWAY, "the tracker offered a relay from an invalid origin URL") from None


async def _chunks(body: UpstreamBody) -> AsyncIterator[bytes]:
    """The relayed bytes as they arrive (httpx would gather a chunk size first); a connection
    the origin cuts (its fetch failed) is BAD_GATEWAY."""
    try:
        async for chunk in body.response.aiter_raw():
            yield chunk
    except httpx.HTTPError as error:
        raise SwarmregError(BAD_GATEWAY, f"the origin's relay broke off: {type(error).__name__}") from None
