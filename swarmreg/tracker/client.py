"""The peer side of the tracker channel: one websocket, reconnected, with requests that wait for it."""

from __future__ import annotations

import itertools
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket

from swarmreg.authz import bearer_headers
from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, UNAVAILABLE, SwarmregError, error_code
from swarmreg.origin.wire import FETCH_WAIT
from swarmreg.tracker.wire import (
    MAX_FORGET,
    MAX_REPLY,
    PATH,
    TO_PEER,
    AgentAddress,
    AgentsReply,
    AgentsRequest,
    Announce,
    AnnounceReply,
    Forget,
    Forgotten,
    Hello,
    Leave,
    MetainfoReply,
    MetainfoRequest,
    Peer,
    PeersPush,
    ProtocolError,
    decode,
    encode,
)

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 60.0
MAX_BACKOFF = 5.0


@attrs.frozen
class Announcement:
    """What this peer announces for one torrent."""

    info_hash: str
    digest: str
    namespace: str
    complete: bool
    # Announce as an origin of the torrent (the tracker takes it from the origin role only).
    origin: bool = False
    # Pieces held so far (a download's progress).
    progress: int = 0


class TrackerClient:
    """Keeps one websocket to a tracker open, re-announcing everything after each reconnect.

    ``trackers`` is the ring of trackers (or one tracker's address): the client connects to its
    first live member, which is the same for every client (so that, with each tracker's own peer
    store, every agent meets the others at one tracker), moves to the next when that one fails,
    and back when the ring's first live member changes; each new connection re-announces what
    the engine holds and downloads.
    ``announcements()`` lists what to announce (every torrent the engine holds);
    ``on_peers(info_hash, peers)`` receives peers from replies and pushes.
    """

    def __init__(self, trackers: Address | Ring, *, port: Callable[[], int], peer_id: str,
                 announcements: Callable[[], Iterable[Announcement]],
                 on_peers: Callable[[str, tuple[Peer, ...]], None], attempts: int = 5,
                 interval: float = 30.0, tls: ssl.SSLContext | None = None, secret: str = "") -> None:
        self.ring = trackers if isinstance(trackers, Ring) else Ring.static("tracker", trackers)
        self.address = self.ring.members[0] if self.ring.members else None  # the one connected to, or last tried
        self.tls = tls
        # The cluster secret, sent in the websocket handshake (the tracker checks it for origin announces).
        self._headers = [(name.encode(), value.encode()) for name, value in bearer_headers(secret).items()]
        self.port = port
        self.peer_id = peer_id
        self.announcements = announcements
        self.on_peers = on_peers
        self.attempts = attempts
        self.interval = interval
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._ended = trio.Event()  # set when the current session ends (a new one for each)
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[Any]] = {}
        self.connects = 0
        self._stopped = False
        self._api_port: int | None = None  # an agent's blob API, told the tracker on each connect
        self._moving = False  # this client closes the connection to go to another tracker

    # -- the connection ----------------------------------------------------------------------

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until ``stop``; ready at once (requests wait for the connection)."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._connect_forever)
            await stop.wait()
            nursery.cancel_scope.cancel()
        # Requests still waiting for a connection fail now, not after their backoff: a download
        # finishing during shutdown must not hold the daemon until its deadline.
        self._stopped = True
        self._connected.set()

    async def _connect_forever(self) -> None:
        """Connect, serve the session, and reconnect with backoff, whatever ends the session.

        Nothing a tracker sends ends this loop: a frame that breaks the protocol drops that
        connection (its reason logged), and any other failure of a session is logged and
        retried the same way. Only cancellation (the client stopping) gets through.
        """
        backoff = 0.1
        while True:
            healthy = False
            members = self.ring.order()
            if not members:  # a DNS ring not resolved yet
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if members[0] != self.address:
                backoff = 0.1  # another tracker: no reason to wait
            member = self.address = members[0]
            try:
                async with open_websocket(member.host, member.port, PATH, use_ssl=self.tls or False,
                                          max_message_size=MAX_REPLY, connect_timeout=10,
                                          extra_headers=self._headers) as ws:
                    self.connects += 1
                    log.info("connected to the tracker at %s", member)
                    healthy = await self._session(ws, member)
            except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError) as error:
                log.info("tracker at %s unreachable: %s", member, error or type(error).__name__)
                self.ring.mark_down(member, type(error).__name__)
            except Exception:  # a bug of ours or a tracker we do not understand: log, reconnect
                log.exception("tracker connection to %s failed", member)
                self.ring.mark_down(member, "connection failed")
            finally:
                self._ended_session()
                for channel in self._waiting.values():
                    channel.close()
                self._waiting.clear()
            # A session that ended normally starts the backoff over; one that broke the protocol
            # (or failed) backs off further, so a broken tracker is not hammered with reconnects.
            if healthy:
                backoff = 0.1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self, ws: WebSocketConnection, member: Address) -> bool:
        """Receive frames until the connection ends; True if the tracker kept to the protocol.

        A frame that does not decode or validate (say, an interval that is not a finite
        number of seconds in bounds) closes the connection with the reason (code 1002), and
        the caller reconnects. The error never leaves the nursery, where it would come out
        wrapped in an ExceptionGroup that no ``except ProtocolError`` sees.
        """
        self._ws = ws
        self._ended = trio.Event()
        self._connected.set()
        if self._api_port is not None:
            await ws.send_message(encode(Hello(self._api_port)))
        kept_protocol = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reannounce)
            nursery.start_soon(self._follow_ring, ws, member)
            try:
                while True:
                    self._receive(decode(await ws.get_message(), TO_PEER, MAX_REPLY))
            except ConnectionClosed as closed:
                log.info("tracker at %s closed the connection: %s", member, closed.reason)
                if not self._moving:  # it stopped or dropped us: the next one takes over meanwhile
                    self.ring.mark_down(member, "it closed the connection")
                self._moving = False
            except ProtocolError as error:
                log.warning("tracker at %s broke the protocol, dropping the connection: %s", self.address, error)
                kept_protocol = False
                with trio.move_on_after(1.0) as closing:
                    closing.shield = True  # the close handshake runs even if the client stops now
                    await ws.aclose(code=1002, reason=str(error)[:120])
            finally:
                self._ended_session()  # before any await: no request starts on this connection now
                nursery.cancel_scope.cancel()
        return kept_protocol

    def _ended_session(self) -> None:
        """The connection is gone: requests wait for the next one (and those sent on it, for this)."""
        self._ws = None
        self._ended.set()
        if self._connected.is_set():  # an unset one may have waiters: keep it for them
            self._connected = trio.Event()

    async def _follow_ring(self, ws: WebSocketConnection, member: Address) -> None:
        """Close the connection to ``member`` once the ring's first live tracker is another one
        (it came back, or the ring changed): every client moves there, and meets the others."""
        version = self.ring.version
        while True:
            version = await self.ring.wait_changed(version)
            first = next(iter(self.ring.order()), member)
            if first != member and self.ring.live(first):
                log.info("moving from the tracker at %s to %s, the ring's first live one", member, first)
                self._moving = True
                with trio.move_on_after(1.0) as closing:
                    closing.shield = True
                    await ws.aclose(code=1001, reason="moving to another tracker")
                return

    def _receive(self, frame: Any) -> None:
        if isinstance(frame, PeersPush):
            self.on_peers(frame.info_hash, frame.peers)
            return
        channel = self._waiting.pop(frame.request_id, None)
        if channel is not None:
            channel.send_nowait(frame)
            channel.close()

    async def _reannounce(self) -> None:
        """Announce every torrent at once after connecting, then every interval.

        Its failures are logged, never raised: they would end the session (and with it
        every request waiting on this connection).
        """
        while True:
            try:
                announcements = list(self.announcements())
            except Exception:
                log.exception("listing what to announce failed")
                announcements = []
            for announcement in announcements:
                try:
                    await self.announce(announcement)
                except SwarmregError as error:
                    log.info("re-announce of %s: %s", announcement.digest, error.message)
                except Exception:
                    log.exception("re-announce of %s failed", announcement.digest)
            await trio.sleep(self.interval)

    async def register_api(self, port: int) -> None:
        """Tell the tracker (now, and after every reconnect) that this agent's blob API listens on ``port``."""
        self._api_port = port
        if (ws := self._ws) is not None:
            try:
                await ws.send_message(encode(Hello(port)))
            except (ConnectionClosed, trio.BrokenResourceError):
                pass  # the next session says it

    # -- requests ----------------------------------------------------------------------------

    async def _request(self, make: Callable[[int], Any], expected: type, reply_timeout: float = REPLY_TIMEOUT) -> Any:
        """Send a request and wait for its reply, retrying over reconnects; UNAVAILABLE at the end.

        A reply of another type than ``expected`` (a tracker that mixed its request ids up) is
        BAD_GATEWAY, not an AttributeError in the caller.
        """
        for attempt in range(self.attempts):
            with trio.move_on_after(2.0 * 2 ** attempt):
                await self._connected.wait()
            if self._stopped:
                raise SwarmregError(UNAVAILABLE, "the tracker client has stopped")
            ws, ended = self._ws, self._ended
            if ws is None:
                continue
            request_id = next(self._ids)
            send, receive = trio.open_memory_channel[Any](1)
            self._waiting[request_id] = send
            try:
                await ws.send_message(encode(make(request_id)))
                with trio.move_on_after(reply_timeout):
                    async for reply in receive:
                        if not isinstance(reply, expected):
                            log.warning("tracker at %s answered a %s to a request for a %s", self.address,
                                        type(reply).__name__, expected.__name__)
                            raise SwarmregError(BAD_GATEWAY, f"tracker answered a {type(reply).__name__} "
                                                f"to a request for a {expected.__name__}")
                        return reply
            except (ConnectionClosed, trio.BrokenResourceError):
                # The session has not seen it yet (the tracker was killed a moment ago): the next
                # attempt waits for the next connection, instead of failing on this one again at once.
                with trio.move_on_after(REPLY_TIMEOUT):
                    await ended.wait()
            finally:
                self._waiting.pop(request_id, None)
        # The address is for the log: the error may reach a registry client.
        log.warning("tracker at %s unreachable after %d attempts", self.address, self.attempts)
        raise SwarmregError(UNAVAILABLE, f"tracker unreachable after {self.attempts} attempts")

    async def announce(self, announcement: Announcement) -> tuple[Peer, ...]:
        """Announce one torrent; returns (and hands to ``on_peers``) the peers to connect to."""
        # The tracker fills the host in.
        me = Peer(self.peer_id, "", self.port(), announcement.complete, announcement.origin)
        reply: AnnounceReply = await self._request(lambda request_id: Announce(
            request_id, announcement.info_hash, announcement.digest, announcement.namespace, me,
            announcement.progress), AnnounceReply)
        if reply.failure is not None:
            raise _failure(reply.failure)
        self.interval = reply.interval  # in [MIN_INTERVAL, MAX_INTERVAL]: decode checked it
        self.on_peers(reply.info_hash, reply.peers)
        return reply.peers

    async def leave(self, info_hash: str) -> None:
        if self._ws is not None:
            try:
                await self._ws.send_message(encode(Leave(info_hash)))
            except (ConnectionClosed, trio.BrokenResourceError):
                pass

    async def metainfo(self, namespace: str, digest: str, *, relay: bool = False) -> MetainfoReply:
        """The blob's metainfo from the tracker (which asks the origins), with the bytes of a small blob.

        With ``relay`` the reply may instead carry a Relay (``reply.relay``): the blob is still
        being fetched by an origin, and streams from there as it arrives."""
        # The tracker asks an origin, which may first fetch the blob from its backend (FETCH_WAIT).
        reply: MetainfoReply = await self._request(
            lambda request_id: MetainfoRequest(request_id, namespace, digest, relay), MetainfoReply, FETCH_WAIT)
        if reply.failure is not None or (reply.metainfo is None and not (relay and reply.relay is not None)):
            raise _failure(reply.failure)
        return reply


async def list_agents(address: Address, *, tls: ssl.SSLContext | None = None, secret: str = "",
                      timeout: float = 10.0) -> tuple[AgentAddress, ...]:
    """The agents connected to the tracker at ``address`` now (their blob APIs), over one short
    websocket; UNAVAILABLE when it cannot be reached or does not answer within ``timeout``."""
    headers = [(name.encode(), value.encode()) for name, value in bearer_headers(secret).items()]
    reply: AgentsReply | None = None
    with trio.move_on_after(timeout):
        try:
            async with open_websocket(address.host, address.port, PATH, use_ssl=tls or False,
                                      max_message_size=MAX_REPLY, connect_timeout=timeout,
                                      extra_headers=headers) as ws:
                await ws.send_message(encode(AgentsRequest(1)))
                while reply is None:
                    frame = decode(await ws.get_message(), TO_PEER, MAX_REPLY)
                    if isinstance(frame, AgentsReply) and frame.request_id == 1:
                        reply = frame
        except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, ProtocolError) as error:
            log.warning("listing the agents at the tracker %s failed: %s", address, error or type(error).__name__)
            raise SwarmregError(UNAVAILABLE, f"the tracker did not list its agents: {type(error).__name__}") from None
    if reply is None:
        log.warning("the tracker %s did not list its agents within %g s", address, timeout)
        raise SwarmregError(UNAVAILABLE, f"the tracker did not list its agents within {timeout:g} s")
    if reply.failure is not None:
        raise _failure(reply.failure)
    return reply.agents


async def forget_blobs(address: Address, digests: Sequence[Digest], *, tls: ssl.SSLContext | None = None,
                       secret: str = "", timeout: float = 30.0) -> int:
    """Tell the tracker at ``address`` that this origin no longer holds ``digests`` (its garbage
    collector removed them), over one short websocket; how many it had cached. UNAVAILABLE when it
    cannot be reached or does not answer within ``timeout``."""
    headers = [(name.encode(), value.encode()) for name, value in bearer_headers(secret).items()]
    hexes = [digest.hex for digest in digests]
    batches = [tuple(hexes[i:i + MAX_FORGET]) for i in range(0, len(hexes), MAX_FORGET)]
    forgotten, answered = 0, 0
    with trio.move_on_after(timeout):
        try:
            async with open_websocket(address.host, address.port, PATH, use_ssl=tls or False,
                                      max_message_size=MAX_REPLY, connect_timeout=timeout,
                                      extra_headers=headers) as ws:
                # One at a time: the tracker drops a connection that lets its replies pile up.
                for request_id, batch in enumerate(batches, 1):
                    await ws.send_message(encode(Forget(request_id, batch)))
                    while True:
                        frame = decode(await ws.get_message(), TO_PEER, MAX_REPLY)
                        if isinstance(frame, Forgotten) and frame.request_id == request_id:
                            break
                    if frame.failure is not None:
                        raise _failure(frame.failure)
                    forgotten += frame.forgotten
                    answered += 1
        except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, ProtocolError) as error:
            log.warning("telling the tracker %s of removed blobs failed: %s", address, error or type(error).__name__)
            raise SwarmregError(UNAVAILABLE, f"the tracker was not told: {type(error).__name__}") from None
    if answered < len(batches):
        raise SwarmregError(UNAVAILABLE, f"the tracker did not answer within {timeout:g} s")
    return forgotten


def _failure(failure: Any) -> SwarmregError:
    try:
        code = error_code(failure.code)
    except (KeyError, AttributeError):
        code = UNAVAILABLE
    return SwarmregError(code, getattr(failure, "message", None) or code.message)
