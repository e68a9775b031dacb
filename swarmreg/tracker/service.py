"""The tracker service: the websocket announce channel, peer lists pushed to peers, metainfo."""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import logging
import random
import secrets
import ssl
import weakref
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from prometheus_client.core import Metric
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from swarmreg.authz import AGENT_DIRECTORY, TRACKER_ORIGINS, ClusterGuard
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.errors import UNAVAILABLE, SwarmregError, log_failure
from swarmreg.metrics import FamiliesCollector, counter, gauge
from swarmreg.node import Node
from swarmreg.origin.client import OriginClient
from swarmreg.tracker.http import HttpAndWebSocketServer
from swarmreg.tracker.limits import TokenBucket
from swarmreg.tracker.origins import OriginDirectory, RelayOffer
from swarmreg.tracker.reachable import reachable
from swarmreg.tracker.store import SharedStore, Store, connection_owner, open_store, owner_tracker
from swarmreg.tracker.wire import (
    HEALTH_PATH,
    MAX_AGENTS,
    PATH,
    TO_TRACKER,
    AgentAddress,
    AgentsReply,
    AgentsRequest,
    Announce,
    AnnounceReply,
    Failure,
    Forget,
    Forgotten,
    Hello,
    Leave,
    MetainfoReply,
    MetainfoRequest,
    Peer,
    PeersPush,
    ProtocolError,
    Relay,
    decode,
    encode,
)

log = logging.getLogger(__name__)

# Frames queued for one connection; a peer that lets more pile up is too slow and is dropped.
SEND_QUEUE = 256
# Requests one connection may have in flight (each may wait on an origin).
IN_FLIGHT = 32
# Seconds an announce waits for the origin to confirm a blob whose metainfo is stale.
REFRESH_WAIT = 5.0
# With a shared store: how often a tracker says it runs, and after how long without a word it is
# dead (its connections' peer ids then go to whoever announces them through another tracker).
HEARTBEAT = 1.0
HEARTBEAT_TTL = 5.0
# Seconds a closed connection's removal from the store may take (Redis may be down: then its
# entries expire).
DROP_WAIT = 5.0
# Torrents the status page lists (those with the most peers).
STATUS_TORRENTS = 50


def _endpoint_key(host: Any, port: int) -> tuple[str, int]:
    return str(ipaddress.ip_address(str(host))), int(port)


class _RecordingListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands over accepted streams as they are, remembering each TLS stream by its remote
    address: trio-websocket shows a handler the request, not the stream, and the tracker
    reads the caller's certificate from the stream."""

    def __init__(self, inner: trio.abc.Listener[Any], streams: weakref.WeakValueDictionary[Any, Any]) -> None:
        self.inner = inner
        self.streams = streams

    async def accept(self) -> trio.abc.Stream:
        stream: trio.abc.Stream = await self.inner.accept()
        if isinstance(stream, trio.SSLStream):
            self.streams[_endpoint_key(*stream.transport_stream.socket.getpeername()[:2])] = stream
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Connection:
    """One peer's websocket: its outgoing queue and the torrents it announced."""

    def __init__(self, ws: WebSocketConnection, frames: TokenBucket, owner: str, *,
                 peercert: dict[str, Any] | None = None, authorization: str | None = None) -> None:
        self.ws = ws
        self.owner = owner  # whose its entries in the peer store are
        # Who is calling, for the announces only some roles may make.
        self.peercert = peercert
        self.authorization = authorization
        self.frames = frames  # how fast it may send
        self.host = str(getattr(ws.remote, "address", "127.0.0.1"))
        self.local_host = str(getattr(ws.local, "address", ""))  # where the peer reached this host
        self.peer_ids: dict[str, str] = {}  # info-hash -> the peer id announced for it
        self.api_port: int | None = None  # an agent's blob API (its Hello), on self.host
        self.outbox, self._inbox = trio.open_memory_channel[Any](SEND_QUEUE)
        self.slots = trio.Semaphore(IN_FLIGHT)
        self.scope = trio.CancelScope()

    def send(self, frame: Any) -> None:
        """Queue a frame; a peer that lets SEND_QUEUE frames pile up is disconnected."""
        try:
            self.outbox.send_nowait(frame)
        except trio.WouldBlock:
            log.warning("dropping tracker connection from %s: it does not read its frames", self.host)
            self.scope.cancel()
        except trio.ClosedResourceError:
            pass

    async def send_loop(self) -> None:
        try:
            async for frame in self._inbox:
                await self.ws.send_message(encode(reachable(frame, self.local_host)))
        except ConnectionClosed:
            self.scope.cancel()


async def _refuse(request: WebSocketRequest, status: int, body: bytes) -> None:
    """Refuse the handshake with ``status`` and end the connection.

    trio-websocket (0.12) sends the refusal but then leaves the socket open, read by nobody and
    with no timeout, until the client hangs up: a client that reuses the connection waits forever
    for an answer, and each refused handshake held a socket for good.
    """
    await request.reject(status, extra_headers=[(b"Connection", b"close")], body=body)
    await request._connection._close_stream()  # no public way to end a refused connection


class TrackerService:
    """Serves the announce channel until the daemon stops."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config.tracker
        self.peers: Store = open_store(self.config)
        self.shared = self.peers if isinstance(self.peers, SharedStore) else None
        # Names this tracker's connections in a store other trackers share.
        self.tracker_id = secrets.token_hex(8)
        self._accepted = 0
        # Frames answered or pushed, for /metrics.
        self.announces = 0
        self.metainfo_requests = 0
        self.pushes = 0
        self.inline_sent = 0  # bytes of small blobs sent with their metainfo (the agents count them as from origins)
        node.metrics.add(FamiliesCollector(self._families))
        node.metrics.byte_sources.append(lambda: {("sent", "agent"): self.inline_sent})
        self.origins: OriginDirectory | None = None
        self._subscribers: dict[str, set[_Connection]] = {}
        self._connections: dict[str, _Connection] = {}  # by owner id
        self._nursery: trio.Nursery | None = None
        self.guard = ClusterGuard.from_config(node.config)
        self._streams: weakref.WeakValueDictionary[tuple[str, int], trio.SSLStream[Any]] = \
            weakref.WeakValueDictionary()

    async def _listen(self, listen: Address, context: ssl.SSLContext | None) -> tuple[list[Any], int]:
        """The websocket's listeners (TLS ones remember their streams) and the port they bound."""
        sockets = await trio.open_tcp_listeners(listen.port, host=listen.host)
        port = sockets[0].socket.getsockname()[1]
        inner: list[trio.abc.Listener[Any]] = list(sockets)
        if context is not None:
            inner = [trio.SSLListener(socket, context, https_compatible=False) for socket in sockets]
        return [_RecordingListener(listener, self._streams) for listener in inner], port

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        listen = self.config.listen
        tls = self.node.tls
        async with AsyncExitStack() as clients:
            directory = await clients.enter_async_context(OriginClient(
                self._origin_ring(), timeout=30, tls=tls.client, secret=self.node.config.cluster.secret))
            self.origins = OriginDirectory(directory, self.peers, self.config.metainfo_cache_size,
                                           on_seeder=self._push, inline_max=self.config.inline_max,
                                           inline_budget=self.config.inline_cache,
                                           replicas=self.node.config.origin.replicas)
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.origins.bind(nursery)
                    self.node.status.sources["tracker"] = self.status_figures
                    if self.shared is not None:
                        # Started once subscribed, or once that failed (Redis down): it retries.
                        await nursery.start(self.shared.listen, self._hear)
                        await nursery.start(self._heartbeat, self.shared)
                    listeners, port = await self._listen(listen, tls.server)
                    server = HttpAndWebSocketServer(
                        self._serve, listeners, handler_nursery=nursery, max_message_size=self.config.max_frame_size,
                        connect_timeout=self.config.handshake_timeout, disconnect_timeout=self.config.handshake_timeout,
                        node=self.node)
                    await nursery.start(server.run)
                    nursery.start_soon(self._expire)
                    address = Address(listen.host, port)
                    log.info("tracker listening on %s://%s%s", tls.ws, address, PATH)
                    task_status.started({"ws": str(address)})
                    await self.node.stop.wait()
                    with trio.move_on_after(2):
                        for connection in list(self._connections.values()):
                            await connection.ws.aclose(1001, "tracker shutting down")
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(DROP_WAIT):
                    if self.shared is not None:
                        with contextlib.suppress(SwarmregError):  # else its heartbeat lapses
                            await self.shared.retire(self.tracker_id)
                    await self.peers.aclose()

    async def _heartbeat(self, shared: SharedStore, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tell the trackers sharing the store that this one runs (its connections' peer ids stay
        theirs); started after the first try, before the tracker takes connections."""
        while True:
            with contextlib.suppress(SwarmregError):  # the store logs its trouble
                await shared.heartbeat(self.tracker_id, HEARTBEAT_TTL)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(HEARTBEAT)

    def _origin_ring(self) -> Ring:
        """[cluster] origins; else tracker.origins (a static ring, probed when it has several);
        else the origin role of this daemon (which the daemon checked runs, and started first)."""
        if "origin" in self.node.rings or not self.config.origins:
            return self.node.ring("origin", None)
        cluster = self.node.config.cluster
        if len(self.config.origins) == 1:
            return Ring.static("origin", self.config.origins[0])
        return Ring("origin", self.config.origins, health_interval=0, max_backoff=cluster.max_backoff)

    async def _expire(self) -> None:
        while True:
            await trio.sleep(self.config.announce_interval)
            try:
                expired = await self.peers.expire_entries()
            except SwarmregError:  # the store logs its trouble; the next round sweeps
                continue
            if expired:
                log.info("expired %d peer(s)", len(expired))
                self._left(expired)
                # Another tracker's connections hear of it through the store (with Redis, whoever
                # sweeps first expires every tracker's peers).
                remote = [[info_hash, owner] for info_hash, owner in expired
                          if owner is not None and owner_tracker(owner) not in (None, self.tracker_id)]
                if remote and self.shared is not None:
                    with contextlib.suppress(SwarmregError):
                        await self.shared.publish({"kind": "expired", "entries": remote})

    def _left(self, expired: list[tuple[str, str | None]]) -> None:
        """Each connection leaves the torrents its entries expired in: it hears no more of
        their peers, and what is kept per connection shrinks with its entries (a torrent
        dropped without a leave stayed there for as long as the connection lived)."""
        for info_hash, owner in expired:
            connection = self._connections.get(owner or "")
            if connection is not None and connection.peer_ids.pop(info_hash, None) is not None:
                self._unsubscribe(connection, info_hash)

    def _hear(self, event: dict[str, Any]) -> None:
        """An event another tracker published in the shared store: pushes for this tracker's connections."""
        try:
            kind = event["kind"]
            if kind == "expired":
                self._left([(str(info_hash), str(owner)) for info_hash, owner in event["entries"]])
                return
            info_hash, peer = str(event["info_hash"]), Peer(*event["peer"])
            if kind == "push" and event["tracker"] != self.tracker_id:  # its own were pushed already
                self._push_here(info_hash, peer)
            elif kind == "dial" and (helper := self._connections.get(str(event["to"]))) is not None:
                helper.send(PeersPush(info_hash, (peer,)))
        except (KeyError, TypeError, ValueError) as error:
            log.warning("ignoring a malformed event in the tracker's store: %r", error)

    async def _serve(self, request: WebSocketRequest) -> None:
        if request.path == HEALTH_PATH:
            ws = await request.accept()
            await ws.aclose(1000, "OK")
            return
        if request.path != PATH:
            await _refuse(request, 404, b"the announce channel is at /announce")
            return
        headers = {name.lower(): value for name, value in request.headers}
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        peercert = None
        remote = request.remote
        if not isinstance(remote, str):
            stream = self._streams.get(_endpoint_key(remote.address, remote.port))
            peercert = stream.getpeercert() if stream is not None else None
        self._accepted += 1
        # Before the handshake's await: connections accepted meanwhile must not get the same owner.
        owner = connection_owner(self.tracker_id, self._accepted)
        connection = _Connection(await request.accept(),
                                 TokenBucket(self.config.frame_rate, self.config.frame_burst),
                                 owner, peercert=peercert, authorization=authorization)
        self._connections[connection.owner] = connection
        try:
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connection.send_loop)
                    await self._receive_loop(connection, nursery)
                    nursery.cancel_scope.cancel()
        except* ProtocolError as group:
            await self._close(connection, 1008, str(group.exceptions[0]))
        except* Exception as group:  # a bug of ours: this connection ends, the tracker serves on
            log.error("tracker connection from %s failed", connection.host, exc_info=group)
            await self._close(connection, 1011, "internal error")
        finally:
            with trio.CancelScope(shield=True):
                await self._forget(connection)

    async def _forget(self, connection: _Connection) -> None:
        """Take a connection out of every torrent: its peers go, its peer id is free again."""
        if self._connections.pop(connection.owner, None) is None:
            return
        for info_hash in connection.peer_ids:
            self._unsubscribe(connection, info_hash)
        # With the store down, its entries expire (and its peer id lapses) instead.
        with trio.move_on_after(DROP_WAIT), contextlib.suppress(SwarmregError):
            await self.peers.drop_owner(connection.owner)

    async def _alive(self, connection: _Connection) -> bool:
        """Whether ``connection`` answers a ping; one that does not is closed and forgotten.

        A peer that reconnected announces its peer id on a new connection while the old one
        may not have been seen to close (a half-open TCP connection): asked now, it goes.
        """
        with trio.move_on_after(self.config.handshake_timeout):
            try:
                await connection.ws.ping()
                return True
            except ConnectionClosed:
                pass
        log.warning("dropping tracker connection from %s: another connection announces its peer id "
                    "and it does not answer a ping", connection.host)
        await self._forget(connection)
        connection.scope.cancel()
        return False

    @staticmethod
    async def _close(connection: _Connection, code: int, reason: str) -> None:
        log.warning("closing tracker connection from %s: %s", connection.host, reason)
        with trio.move_on_after(2):
            await connection.ws.aclose(code, reason[:120])

    def _unsubscribe(self, connection: _Connection, info_hash: str) -> None:
        subscribers = self._subscribers.get(info_hash)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._subscribers[info_hash]

    async def _receive_loop(self, connection: _Connection, nursery: trio.Nursery) -> None:
        max_size = self.config.max_frame_size
        while True:
            try:
                data = await connection.ws.get_message()
            except ConnectionClosed:
                return
            frame = decode(data, TO_TRACKER, max_size)
            await connection.frames.take()
            if isinstance(frame, Leave):
                if connection.peer_ids.pop(frame.info_hash, None) is not None:
                    self._unsubscribe(connection, frame.info_hash)
                    with contextlib.suppress(SwarmregError):  # with the store down, its entry expires
                        await self.peers.leave(frame.info_hash, connection.owner)
                continue
            if isinstance(frame, Hello):
                self._hello(connection, frame)
                continue
            # Requests may wait on an origin; a connection gets a bounded number at once.
            await connection.slots.acquire()
            nursery.start_soon(self._answer, connection, frame)

    async def _answer(self, connection: _Connection,
                      frame: Announce | MetainfoRequest | AgentsRequest | Forget) -> None:
        try:
            if isinstance(frame, Announce):
                self.announces += 1
                connection.send(await self._announce(connection, frame))
            elif isinstance(frame, AgentsRequest):
                connection.send(self._agents(connection, frame))
            elif isinstance(frame, Forget):
                connection.send(await self._forget_blobs(connection, frame))
            else:
                self.metainfo_requests += 1
                connection.send(await self._metainfo(frame))
        finally:
            connection.slots.release()

    def _hello(self, connection: _Connection, frame: Hello) -> None:
        """Record an agent's blob API. The proxy sends the cluster secret to that address when it
        asks the agent to prefetch, so without [tls] (whose handshake verified a cluster
        certificate) only a holder of the secret may register; the host is always the one the
        connection comes from."""
        if not self.guard.tls:
            try:
                self.guard.check(AGENT_DIRECTORY, "registering an agent's blob API",
                                 peercert=connection.peercert, authorization=connection.authorization)
            except SwarmregError as error:
                log.warning("ignoring the agent registration from %s: %s", connection.host, error.message)
                return
        if connection.api_port != frame.api_port:
            log.info("agent at %s serves blobs on port %d", connection.host, frame.api_port)
        connection.api_port = frame.api_port

    def status_figures(self) -> dict[str, Any]:
        """The tracker's part of its daemon's status page: its connections, and the torrents their
        peers announced here with how many peers each (the most first, at most STATUS_TORRENTS)."""
        counts = ((len(peers), info_hash) for info_hash, peers in self._subscribers.items())
        torrents = heapq.nlargest(STATUS_TORRENTS, counts)
        return {"connections": len(self._connections), "agents": len(self.live_agents()),
                "torrent_count": len(self._subscribers),
                "torrents": [{"info_hash": info_hash, "peers": count} for count, info_hash in torrents]}

    def _families(self) -> Iterator[Metric]:
        """The tracker's series (docs/metrics.md): its connections, and the torrents they are in."""
        sizes = [len(subscribers) for subscribers in self._subscribers.values()]
        yield gauge("swarmreg_tracker_connections", "Websocket connections open (agents, origins, proxies).",
                    len(self._connections))
        yield counter("swarmreg_tracker_connections_accepted", "Websocket connections accepted.", self._accepted)
        yield gauge("swarmreg_tracker_torrents", "Torrents a connection of this tracker is in.", len(sizes))
        yield gauge("swarmreg_tracker_torrent_peers", "Peers in those torrents, summed.", sum(sizes))
        yield gauge("swarmreg_tracker_torrent_peers_max", "Peers in the torrent that has the most.",
                    max(sizes, default=0))
        yield counter("swarmreg_tracker_announces", "Announces answered.", self.announces)
        yield counter("swarmreg_tracker_metainfo_requests", "Metainfo requests answered.", self.metainfo_requests)
        yield counter("swarmreg_tracker_pushes", "Peers pushed to the connections in a torrent.", self.pushes)

    def live_agents(self) -> list[AgentAddress]:
        """The blob APIs of the agents connected now, each once."""
        found = dict.fromkeys(AgentAddress(c.host, c.api_port) for c in self._connections.values() if c.api_port)
        return list(found)

    def _agents(self, connection: _Connection, frame: AgentsRequest) -> AgentsReply:
        try:
            self.guard.check(AGENT_DIRECTORY, "listing the agents", peercert=connection.peercert,
                             authorization=connection.authorization)
        except SwarmregError as error:
            return AgentsReply(frame.request_id, failure=Failure(error.code.code, error.message))
        agents = self.live_agents()
        if len(agents) > MAX_AGENTS:
            agents = random.sample(agents, MAX_AGENTS)
        return AgentsReply(frame.request_id, tuple(agents))

    async def _forget_blobs(self, connection: _Connection, frame: Forget) -> Forgotten:
        """An origin's garbage collector removed these blobs: forget their metainfo and seeders."""
        assert self.origins is not None
        try:
            self.guard.check(TRACKER_ORIGINS, "forgetting blobs", peercert=connection.peercert,
                             authorization=connection.authorization)
        except SwarmregError as error:
            return Forgotten(frame.request_id, failure=Failure(error.code.code, error.message))
        forgotten = 0
        for digest in frame.digests:
            try:
                forgotten += await self.origins.forget(digest)
            except SwarmregError as error:
                return Forgotten(frame.request_id, failure=Failure(error.code.code, error.message))
        if forgotten:
            log.info("forgot %d blob(s) an origin removed", forgotten)
        return Forgotten(frame.request_id, forgotten)

    async def _metainfo(self, frame: MetainfoRequest) -> MetainfoReply:
        assert self.origins is not None
        try:
            # An agent that can relay gets, while the origin still fetches the blob, where to
            # stream it from at once, instead of waiting for the whole fetch and its torrent.
            if frame.relay:
                answer = await self.origins.metainfo_or_relay(frame.namespace, frame.digest)
                if isinstance(answer, RelayOffer):
                    return MetainfoReply(frame.request_id, relay=Relay(answer.url, answer.size))
                known = answer
            else:
                known = await self.origins.metainfo(frame.namespace, frame.digest)
        except SwarmregError as error:
            return MetainfoReply(frame.request_id, failure=Failure(error.code.code, error.message))
        content = self.origins.content(frame.digest)
        self.inline_sent += len(content or b"")
        return MetainfoReply(frame.request_id, metainfo=known.raw, content=content)

    def _push_here(self, info_hash: str, peer: Peer, source: _Connection | None = None) -> None:
        """Tell every connection of this tracker in the torrent but ``source`` of ``peer``."""
        for other in list(self._subscribers.get(info_hash, ())):
            if other is not source:
                self.pushes += 1
                other.send(PeersPush(info_hash, (peer,)))

    async def _push(self, info_hash: str, peer: Peer, source: _Connection | None = None) -> None:
        """Tell every connection in the torrent but ``source`` of ``peer``: this tracker's at once,
        the other trackers' through the shared store (if it is down, they learn of it at their
        next announce)."""
        self._push_here(info_hash, peer, source)
        if self.shared is not None:
            with contextlib.suppress(SwarmregError):
                await self.shared.publish({"kind": "push", "tracker": self.tracker_id, "info_hash": info_hash,
                                           "peer": attrs.astuple(peer)})

    async def _refresh(self, namespace: str, digest: str, done: trio.Event) -> None:
        assert self.origins is not None
        try:
            await self.origins.metainfo(namespace, digest, refresh=True)
        except Exception as error:  # background work: logged, never raised into the tracker's nursery
            log_failure(log, f"refreshing {digest} from the origins", error)
        finally:
            done.set()

    async def _refreshed(self, namespace: str, digest: str) -> None:
        """Have the origins confirm they hold and seed the blob (which records them in the store),
        waiting a while for it. The origin may have released the torrent
        (swarm.idle_torrent_timeout): a peer sent to it before it seeds again is refused, and
        libtorrent retries that peer only after its reconnect delay."""
        assert self._nursery is not None
        refreshed = trio.Event()
        self._nursery.start_soon(self._refresh, namespace, digest, refreshed)
        with trio.move_on_after(REFRESH_WAIT):
            await refreshed.wait()

    async def _announce(self, connection: _Connection, frame: Announce) -> AnnounceReply:
        assert self.origins is not None
        try:
            known = await self.origins.metainfo(frame.namespace, frame.digest)
        except SwarmregError as error:
            return AnnounceReply(frame.request_id, frame.info_hash,
                                 failure=Failure(error.code.code, error.message))
        if known.info_hash != frame.info_hash:
            raise ProtocolError("announced info-hash does not match the blob's metainfo")
        stale = not frame.peer.complete and trio.current_time() - known.fetched > self.config.metainfo_refresh
        if stale:  # someone is downloading: have the origin confirm it still holds and seeds the blob
            await self._refreshed(frame.namespace, frame.digest)
        # An origin's entry never expires and takes over its peer id: only an identified origin
        # (role certificate, or the cluster secret) may make one; unchecked, the flag is dropped.
        origin = frame.peer.origin and not self.guard.open
        if origin:
            try:
                self.guard.check(TRACKER_ORIGINS, "announcing as an origin", peercert=connection.peercert,
                                 authorization=connection.authorization)
            except SwarmregError as error:
                return AnnounceReply(frame.request_id, frame.info_hash, failure=Failure(error.code.code, error.message))
        # A peer is reached at the address its connection comes from, whatever it claims.
        peer = Peer(frame.peer.peer_id, connection.host, frame.peer.port, frame.peer.complete, origin)
        try:
            return await self._record(connection, frame, peer, refreshed=stale)
        except SwarmregError as error:  # the store's (Redis down: UNAVAILABLE) or PEER_ID_TAKEN
            return AnnounceReply(frame.request_id, frame.info_hash, failure=Failure(error.code.code, error.message))

    async def _claimable(self, connection: _Connection, peer_id: str) -> bool:
        """Whether the peer id is free for ``connection`` to claim, after making sure that the
        connection holding it, if another one, lives: one of this tracker that does not answer a
        ping, or one of a tracker that no longer runs, loses it. False if ``connection`` closed meanwhile."""
        for _ in range(3):  # the id may change hands while this waits; then the store decides
            holder = await self.peers.holder(peer_id)
            if holder is None or holder == connection.owner:
                break
            tracker = owner_tracker(holder)
            if tracker == self.tracker_id:
                local = self._connections.get(holder)
                if local is not None and await self._alive(local):
                    break
                if local is None:  # dropped while the store was down: its claim outlived it
                    await self.peers.drop_owner(holder)
            elif self.shared is not None and tracker is not None and await self._gone(self.shared, tracker):
                log.info("taking over peer id %s from a connection of tracker %s, which no longer runs",
                         peer_id, tracker)
                await self.peers.drop_owner(holder)
            else:
                break
        return connection.owner in self._connections

    @staticmethod
    async def _gone(shared: SharedStore, tracker: str) -> bool:
        """Whether the tracker ``tracker`` (another one) no longer runs. Killed a moment ago, its
        heartbeat has not lapsed yet while its agents already announce here: while its beat stays
        the same, wait for it to lapse (up to HEARTBEAT_TTL); a beat that changes is a tracker that runs."""
        first = await shared.beat(tracker)
        with trio.move_on_after(HEARTBEAT_TTL + HEARTBEAT):
            while first is not None:
                await trio.sleep(HEARTBEAT / 4)
                beat = await shared.beat(tracker)
                if beat != first:
                    return beat is None
            return True
        return False

    async def _record(self, connection: _Connection, frame: Announce, peer: Peer, *,
                      refreshed: bool) -> AnnounceReply:
        """Record an announce in the store, push its news, rescue a stalled download; ``refreshed``:
        the origins were just asked again."""
        if await self.peers.is_origin(frame.info_hash, peer):
            return AnnounceReply(frame.request_id, frame.info_hash,
                                 tuple(await self.peers.peers_for(frame.info_hash, exclude=peer.peer_id)),
                                 self.config.announce_interval)
        # A peer id belongs to the connection that announced it first, while that one lives
        # (others get PEER_ID_TAKEN): if it is held elsewhere, make sure the holder lives.
        if not await self._claimable(connection, peer.peer_id):  # forgotten while it waited: it claims nothing
            return AnnounceReply(frame.request_id, frame.info_hash,
                                 failure=Failure(UNAVAILABLE.code, "the connection is closing"))
        peers, news = await self.peers.announce(frame.info_hash, peer, owner=connection.owner,
                                                progress=frame.progress)
        if not (peer.complete or refreshed or any(p.origin for p in peers)):  # origins come first, if any
            # The store lost the origins' entries (a Redis restarted empty): they record them again.
            await self._refreshed(frame.namespace, frame.digest)
            peers = await self.peers.peers_for(frame.info_hash, exclude=peer.peer_id)
        connection.peer_ids[frame.info_hash] = peer.peer_id
        subscribers = self._subscribers.setdefault(frame.info_hash, set())
        subscribers.add(connection)
        if news:
            await self._push(frame.info_hash, peer, connection)
        if (rescue := await self.peers.rescue(frame.info_hash, peer.peer_id, self.config.stall_helpers)) is not None:
            # Once per stall at INFO: with its origins down, a whole fleet stalls at once.
            log.log(logging.INFO if rescue.first else logging.DEBUG,
                    "download of %s by %s:%d stalled at %d piece(s): handing it %d peer(s), %d told to dial it",
                    frame.digest, peer.host, peer.port, frame.progress, len(rescue.peers), len(rescue.helpers))
            peers = rescue.peers
            if rescue.first and not refreshed and self._nursery is not None:
                # Its origin may have died (its entry stays in the store): the origins are asked
                # again, live ones first, and the one that answers is pushed to the torrent.
                self._nursery.start_soon(self._refresh, frame.namespace, frame.digest, trio.Event())
            for helper in rescue.helpers:
                if (local := self._connections.get(str(helper))) is not None:
                    if local is not connection:
                        local.send(PeersPush(frame.info_hash, (peer,)))
                elif self.shared is not None:  # another tracker's connection
                    with contextlib.suppress(SwarmregError):
                        await self.shared.publish({"kind": "dial", "to": helper, "info_hash": frame.info_hash,
                                                   "peer": attrs.astuple(peer)})
        return AnnounceReply(frame.request_id, frame.info_hash, tuple(peers), self.config.announce_interval)
