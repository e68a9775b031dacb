"""The swarm engine: the daemon's one libtorrent session and the task that owns it.

Alerts are pushed, not polled: libtorrent writes to one end of a socketpair
(``set_alert_fd``) when its alert queue becomes non-empty, and the pump waits on
the other end with ``trio.lowlevel.wait_readable``, then routes each alert by
info-hash to its Torrent.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import libtorrent as lt
import trio

from swarmreg.config import Address, SwarmConfig
from swarmreg.errors import BAD_GATEWAY, INTERNAL, STORAGE_FULL, UNAVAILABLE, ErrorCode, SwarmregError
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.swarm.settings import every_peer_global, session_settings
from swarmreg.swarm.torrent import Torrent
from swarmreg.tls.context import PeerTls

log = logging.getLogger(__name__)

# Counters of peers are folded in this often while anything transfers.
SAMPLE_INTERVAL = 1.0

# The longest wait for libtorrent to flush or move a torrent's file (a rename, and writes
# already queued): past it the caller fails instead of waiting for an alert that may never come.
DISK_TIMEOUT = 120.0


# Torrent.counters() keys: they only grow while a torrent is in the session.
_CUMULATIVE = ("received_origin", "received_agent", "sent_origin", "sent_agent", "pieces_verified",
               "hash_failures", "banned_peers")

T = TypeVar("T")
K = TypeVar("K")


class _Pending(Generic[T]):
    """An asynchronous libtorrent call waiting for the alert that answers it with a ``T``."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self._result: tuple[T] | None = None  # in a tuple, so that None can be a result
        self._error = ""
        self._code = INTERNAL

    def resolve(self, result: T) -> None:
        self._result, self._error = (result,), ""
        self.done.set()

    def fail(self, error: str, code: ErrorCode = INTERNAL) -> None:
        if self.done.is_set():
            return
        self._result, self._error, self._code = None, error, code
        self.done.set()

    async def wait(self, timeout: float = math.inf) -> T:
        """The result; UNAVAILABLE past ``timeout`` seconds (the alert may never come)."""
        with trio.move_on_after(timeout):
            await self.done.wait()
        if not self.done.is_set():
            raise SwarmregError(UNAVAILABLE, f"libtorrent did not answer within {timeout:g} s")
        if self._result is None:
            raise SwarmregError(self._code, self._error)
        return self._result[0]


def _info_hash(alert: lt.alert) -> str | None:
    if not isinstance(alert, lt.torrent_alert):
        return None
    try:
        return str(alert.handle.info_hashes().v2)
    except RuntimeError:  # an invalid handle (a torrent already removed)
        return None


class SwarmEngine:
    """Owns the libtorrent session; adds, moves and removes torrents; routes their alerts."""

    def __init__(self, config: SwarmConfig, tls: PeerTls | None = None) -> None:
        self.config = config
        # Set: every torrent is an SSL torrent of the cluster CA, and so is the listening port.
        self.tls = tls
        self.session: lt.session | None = None
        self.address: Address | None = None
        # Our identity towards the tracker (libtorrent draws a peer id per torrent).
        self.peer_id = os.urandom(10).hex()
        self._torrents: dict[str, Torrent] = {}
        # info-hash -> (the pending add, how to make its Torrent from the handle)
        self._adding: dict[str, tuple[_Pending[Torrent], Callable[[lt.torrent_handle], Torrent]]] = {}
        self._moving: dict[str, _Pending[None]] = {}
        self._flushing: dict[str, _Pending[None]] = {}
        self._removing: dict[str, _Pending[None]] = {}
        self._reading: dict[tuple[str, int], _Pending[bytes]] = {}
        self._listening: _Pending[int] = _Pending()  # the peer wire's port
        # Called with a torrent whose file failed (missing, unreadable); roles repair it.
        self.on_failure: list[Callable[[Torrent], None]] = []
        # Called with a torrent released for being idle (release_idle); its file is still there.
        self.on_release: list[Callable[[Torrent], None]] = []
        self._closed = trio.Event()
        # The cumulative counters of torrents that left the session (counters() adds the others'):
        # Prometheus counters never go down when an idle torrent is released.
        self._retired: dict[str, int] = dict.fromkeys(_CUMULATIVE, 0)

    # -- the service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the session until ``close()``; reports the peer-wire address once it listens."""
        session = self.session = lt.session(session_settings(
            self.config, ssl=self.tls is not None, debug=log.isEnabledFor(logging.DEBUG)))
        session.set_peer_class_filter(every_peer_global())
        wake, alert_fd = socket.socketpair()
        wake.setblocking(False)
        alert_fd.setblocking(False)
        session.set_alert_fd(alert_fd.fileno())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, wake)
                try:
                    with trio.fail_after(30):
                        port = await self._listening.wait()
                except SwarmregError as error:
                    raise OSError(f"swarm peer wire: {error.message}") from None
                self.address = Address(self.config.listen.host, port)
                nursery.start_soon(self._sample_peers)
                if self.config.idle_torrent_timeout:
                    nursery.start_soon(self._release_idle_forever, self.config.idle_torrent_timeout)
                log.info("swarm peer wire listening on %s", self.address)
                task_status.started(self.address)
                await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            session.set_alert_fd(-1)
            self.session = None
            # One line, not a warning per held torrent (an origin holds thousands).
            if self._torrents:
                log.info("swarm engine stopped with %d torrents", len(self._torrents))
            for torrent in self._torrents.values():
                torrent.on_error("the swarm engine stopped", warn=False)
            self._torrents.clear()
            # No alert answers these any more: their waiters fail now instead of hanging.
            self._fail_pending(None, "the swarm engine stopped")
            # The session's destructor joins libtorrent's threads: let a worker thread wait for it.
            holder = [session]
            del session
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(holder.clear)
            wake.close()
            alert_fd.close()

    def close(self) -> None:
        """Stop the session (after the roles that use it have stopped)."""
        self._closed.set()

    async def _pump(self, wake: socket.socket) -> None:
        assert self.session is not None
        while True:
            await trio.lowlevel.wait_readable(wake)
            try:
                while wake.recv(4096):
                    pass
            except BlockingIOError:
                pass
            for alert in self.session.pop_alerts():
                try:
                    self._dispatch(alert)
                except Exception:  # a bug in one handler must not stop the session
                    log.exception("handling %s", type(alert).__name__)

    async def _sample_peers(self) -> None:
        # libtorrent answers with a state_update_alert listing the torrents whose
        # status changed, so idle torrents (most of an origin's) cost nothing.
        assert self.session is not None
        while True:
            await trio.sleep(SAMPLE_INTERVAL)
            self.session.post_torrent_updates()

    async def _release_idle_forever(self, idle: float) -> None:
        while True:
            await trio.sleep(max(1.0, idle / 4))
            try:
                await self.release_idle(idle)
            except Exception:  # background work: log it, keep the session
                log.exception("releasing idle torrents")

    async def release_idle(self, idle: float) -> int:
        """Remove from the session every complete torrent that for ``idle`` seconds has moved no
        payload, had no read and no peer that wants a piece; its file stays, and ``on_release``
        hears of it. Returns how many.

        A connected peer alone does not keep a torrent: libtorrent closes a connection that
        neither side is interested in only once the connection limit is reached.

        Each torrent costs libtorrent about 10 KiB, with our side of it more: an origin that
        seeded every blob ever pushed grew by tens of MiB a minute under the registry load test.
        """
        idle_ones = [torrent for torrent in list(self._torrents.values()) if self._idle(torrent, idle)]
        released = 0
        for torrent in idle_ones:
            # Asked for, read or wanted while an earlier one was being removed: it stays.
            if self._torrents.get(torrent.info_hash) is not torrent or not self._idle(torrent, idle):
                continue
            released += 1
            await self.remove(torrent, warn=False)
            # Added again meanwhile, or being added (libtorrent may report the removal before
            # the new add): it did not leave.
            if torrent.info_hash in self._torrents or torrent.info_hash in self._adding:
                continue
            for callback in self.on_release:
                callback(torrent)
        if released:
            log.info("released %d idle torrent(s), %d held", released, len(self._torrents))
        return released

    def _idle(self, torrent: Torrent, idle: float) -> bool:
        """Whether the complete torrent moved no payload, had no read and no peer that wants a
        piece for ``idle`` seconds (a peer that wants one makes it active now)."""
        now = trio.current_time()
        if not torrent.finished.is_set() or torrent.error is not None or now - torrent.last_active < idle:
            return False
        if any(key[0] == torrent.info_hash for key in self._reading):
            return False
        try:
            wanted = any(peer.flags & lt.peer_info.remote_interested for peer in torrent.handle.get_peer_info())
        except RuntimeError:  # being removed
            return False
        if wanted:
            torrent.last_active = now
        return not wanted

    # -- alerts ------------------------------------------------------------------------------

    def _dispatch(self, alert: lt.alert) -> None:
        if isinstance(alert, lt.listen_succeeded_alert):
            wire = lt.socket_type_t.tcp_ssl if self.tls is not None else lt.socket_type_t.tcp
            if alert.socket_type == wire and not self._listening.done.is_set():
                self._listening.resolve(alert.port)
            return
        if isinstance(alert, lt.listen_failed_alert):
            if not self._listening.done.is_set():
                self._listening.fail(f"cannot listen on {self.config.listen}: {alert.message()}")
            return
        if isinstance(alert, lt.add_torrent_alert):
            self._added(alert)
            return
        if isinstance(alert, lt.state_update_alert):
            for status in alert.status:
                if (updated := self._torrents.get(str(status.info_hashes.v2))) is not None:
                    updated.sample_peers()
            return
        if isinstance(alert, lt.torrent_removed_alert):
            if (removed := self._removing.pop(str(alert.info_hashes.v2), None)) is not None:
                removed.resolve(None)
            return
        info_hash = _info_hash(alert)
        if info_hash is None or (torrent := self._torrents.get(info_hash)) is None:
            return
        if isinstance(alert, lt.read_piece_alert):
            if (reading := self._reading.pop((info_hash, alert.piece), None)) is not None:
                if alert.error.value():
                    reading.fail(f"cannot read piece {alert.piece}: {alert.error.message()}")
                else:
                    reading.resolve(bytes(alert.buffer))
        elif isinstance(alert, lt.piece_finished_alert):
            torrent.on_piece(alert.piece_index)
        elif isinstance(alert, lt.torrent_finished_alert):
            torrent.on_finished()
        elif isinstance(alert, lt.torrent_checked_alert):
            torrent.refresh()
        elif isinstance(alert, lt.hash_failed_alert):
            torrent.on_hash_failed(alert.piece_index)
        elif isinstance(alert, lt.peer_ban_alert):
            torrent.banned_peers += 1
            log.warning("torrent %s: banned peer %s", torrent.metainfo.digest, alert.endpoint)
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            if torrent.error is None:  # libtorrent repeats it for every write that fails
                log.warning("torrent %s: %s", torrent.metainfo.digest, alert.message())
            # The alert's own message names the file: the torrent's error (which answers a
            # download's requests) has the reason only.
            full = alert.error.value() in (errno.ENOSPC, errno.EDQUOT) and \
                alert.error.category().name() in ("system", "generic")
            torrent.on_error(f"file error: {alert.error.message()}", warn=False,
                             code=STORAGE_FULL if full else UNAVAILABLE)
            for callback in self.on_failure:
                callback(torrent)
        elif isinstance(alert, (lt.peer_disconnected_alert, lt.peer_error_alert)):
            log.debug("torrent %s: %s", torrent.metainfo.digest, alert.message())
        elif isinstance(alert, lt.cache_flushed_alert):
            if (flushing := self._flushing.pop(info_hash, None)) is not None:
                flushing.resolve(None)
        elif isinstance(alert, lt.storage_moved_alert):
            if (moving := self._moving.pop(info_hash, None)) is not None:
                moving.resolve(None)
        elif isinstance(alert, lt.storage_moved_failed_alert):
            if (moving := self._moving.pop(info_hash, None)) is not None:
                # The alert's own text names the files: the log has it, the error the errno's meaning.
                log.warning("torrent %s: %s", torrent.metainfo.digest, alert.message())
                moving.fail(f"cannot move storage: {alert.error.message()}")

    def _added(self, alert: lt.add_torrent_alert) -> None:
        info_hash = str(alert.params.info_hashes.v2)
        if (adding := self._adding.pop(info_hash, None)) is None:
            return
        pending, make = adding
        if alert.error.value():
            pending.fail(f"cannot add torrent: {alert.error.message()}")
        else:
            torrent = self._torrents[info_hash] = make(alert.handle)
            pending.resolve(torrent)

    # -- torrents ----------------------------------------------------------------------------

    def get(self, info_hash: str) -> Torrent | None:
        return self._torrents.get(info_hash)

    def __iter__(self) -> Iterator[Torrent]:
        return iter(list(self._torrents.values()))

    async def add(self, metainfo: Metainfo, save_path: Path, *, namespace: str = "", seed: bool = False) -> Torrent:
        """Add the blob's torrent with its file in ``save_path`` (or return it if added).

        ``seed`` asserts the file is complete: no hash check at start; libtorrent
        verifies each piece the first time it serves it and falls back to a full
        check if one is bad. Otherwise existing data is checked and kept.
        """
        if (torrent := self._torrents.get(metainfo.info_hash)) is not None:
            torrent.last_active = trio.current_time()  # asked for: not idle
            return torrent
        if self.session is None:
            raise SwarmregError(UNAVAILABLE, "the swarm engine is not running")
        if metainfo.root_cert != (self.tls.root_cert if self.tls else b""):
            raise SwarmregError(BAD_GATEWAY, "the blob's torrent is not rooted at this cluster's CA"
                                if metainfo.root_cert else "a plain torrent on a TLS peer wire",
                                {"digest": str(metainfo.digest)})
        adding = self._adding.get(metainfo.info_hash)
        if adding is None:
            params = metainfo.torrent_params()
            params.save_path = str(save_path)
            flags = (params.flags | lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht
                     | lt.torrent_flags.disable_lsd) & ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
            if seed:
                flags |= lt.torrent_flags.seed_mode
            elif self.config.sequential:
                flags |= lt.torrent_flags.sequential_download
            params.flags = flags
            if seed and self.config.seed_upload_slots:
                params.max_uploads = self.config.seed_upload_slots
            os.makedirs(save_path, exist_ok=True)
            adding = self._adding[metainfo.info_hash] = (
                _Pending(), lambda handle: self._torrent(metainfo, handle, save_path, namespace))
            self.session.async_add_torrent(params)
        return await adding[0].wait()

    def _torrent(self, metainfo: Metainfo, handle: lt.torrent_handle, save_path: Path, namespace: str) -> Torrent:
        if self.tls is not None:  # before any peer connects: it proves our membership
            handle.set_ssl_certificate_buffer(self.tls.cert, self.tls.key, self.tls.dh_params)
        return Torrent(metainfo, handle, save_path, namespace)

    async def read_piece(self, torrent: Torrent, index: int) -> bytes:
        """A verified piece's bytes, through libtorrent's disk thread.

        A piece_finished_alert may come before the piece's bytes reach the file
        (libtorrent 2 hashes from its store buffer), so while a torrent downloads
        its file is read this way, never with plain reads.
        """
        key = (torrent.info_hash, index)
        torrent.last_active = trio.current_time()
        if self._torrents.get(torrent.info_hash) is not torrent:  # removed: no alert would answer
            raise SwarmregError(UNAVAILABLE, "the torrent was removed", {"digest": str(torrent.metainfo.digest)})
        pending = self._reading.get(key)
        if pending is None:
            pending = self._reading[key] = _Pending()
            try:
                torrent.handle.read_piece(index)
            except RuntimeError:  # an invalid handle: forget the wait, or the next read joins it
                del self._reading[key]
                raise SwarmregError(UNAVAILABLE, "the torrent was removed",
                                    {"digest": str(torrent.metainfo.digest)}) from None
        return await self._answer(self._reading, key, pending)

    async def flush(self, torrent: Torrent) -> None:
        """Wait until libtorrent has written all it received of the torrent to its file.

        libtorrent hashes pieces from its store buffer before they reach the file;
        ``flush_cache`` releases the files after the writes queued before it, so an
        fsync afterwards makes every byte durable.
        """
        pending = self._flushing.get(torrent.info_hash)
        if pending is None:
            torrent.raise_if_failed()
            pending = self._flushing[torrent.info_hash] = _Pending()
            torrent.handle.flush_cache()
        await self._answer(self._flushing, torrent.info_hash, pending)

    async def move(self, torrent: Torrent, directory: Path) -> None:
        """Move the torrent's file into ``directory`` (a rename on one filesystem); it keeps seeding."""
        torrent.raise_if_failed()
        pending = self._moving[torrent.info_hash] = _Pending()
        torrent.handle.move_storage(str(directory), lt.move_flags_t.always_replace_files)
        await self._answer(self._moving, torrent.info_hash, pending)
        torrent.save_path = directory

    @staticmethod
    async def _answer(table: dict[K, _Pending[T]], key: K, pending: _Pending[T]) -> T:
        """The pending call's result, within DISK_TIMEOUT; one that timed out is forgotten,
        so the next call asks libtorrent again instead of joining a wait that may never end."""
        try:
            return await pending.wait(DISK_TIMEOUT)
        except SwarmregError:
            if table.get(key) is pending:
                del table[key]
            raise

    def _fail_pending(self, info_hash: str | None, reason: str) -> None:
        """Fail the flushes, moves and reads waiting on the torrent (on every one, for None)."""
        for table in (self._flushing, self._moving):
            for key in [k for k in table if info_hash is None or k == info_hash]:
                table.pop(key).fail(reason, UNAVAILABLE)
        for read in [k for k in self._reading if info_hash is None or k[0] == info_hash]:
            self._reading.pop(read).fail(reason, UNAVAILABLE)
        if info_hash is None:
            for adding, _ in self._adding.values():
                adding.fail(reason, UNAVAILABLE)
            self._adding.clear()
            for removing in self._removing.values():  # gone with the session
                removing.resolve(None)
            self._removing.clear()

    async def remove(self, torrent: Torrent, *, delete_files: bool = False, warn: bool = True) -> None:
        """Remove the torrent from the session (and its file, with ``delete_files``); its waiters
        fail (with a warning logged unless ``warn`` is false: an expected removal)."""
        if self._torrents.pop(torrent.info_hash, None) is None:
            return  # removed already (every torrent is, once the engine stopped)
        for key, value in torrent.counters().items():
            self._retired[key] += value
        assert self.session is not None
        pending = self._removing[torrent.info_hash] = _Pending()
        self.session.remove_torrent(torrent.handle, lt.session.delete_files if delete_files else 0)
        torrent.on_error("removed", warn=warn)
        # Alerts of a removed torrent are not routed: a flush or move waiting on one would hang.
        self._fail_pending(torrent.info_hash, "the torrent was removed")
        with trio.move_on_after(10):
            await pending.wait()

    def counters(self) -> dict[str, int]:
        """Gauges of the session now, and counters since the engine started (of the torrents
        removed too) for /metrics: torrents, downloading, peers, and each of _CUMULATIVE."""
        totals = dict(self._retired)
        torrents = list(self)
        peers = 0
        # One call for every torrent's peer count (a call per torrent crosses to libtorrent's
        # thread each time: 10 µs each, a stalled event loop at an origin seeding thousands); flags
        # 0: none of the costly fields (the piece bitfield, the file progress).
        statuses = self.session.get_torrent_status(lambda _: True, 0) if self.session is not None else []
        connected_by_handle = {status.handle: status.num_peers for status in statuses}
        for torrent in torrents:
            connected = connected_by_handle.get(torrent.handle, 0)  # absent: being removed
            # A torrent without peers has no peer counters to sample (get_peer_info is another
            # call to libtorrent's thread).
            for key, value in torrent.counters(sample=connected > 0).items():
                totals[key] += value
            peers += connected
        downloading = sum(not torrent.finished.is_set() for torrent in torrents)
        return totals | {"torrents": len(torrents), "downloading": downloading, "peers": peers}

    def byte_counts(self) -> dict[tuple[str, str], int]:
        """Peer-wire payload bytes since the engine started: (sent | received, origin | agent) -> bytes."""
        counters = self.counters()
        return {(direction, kind): counters[f"{direction}_{kind}"]
                for direction in ("sent", "received") for kind in ("origin", "agent")}

    def stats(self, peers: bool = False) -> dict[str, Any]:
        """Per-torrent and total counters (and every peer's state, with ``peers``)."""
        torrents = [torrent.stats(peers) for torrent in self]
        totals: dict[str, Any] = {"torrents": len(torrents)}
        for key in ("uploaded", "downloaded", "peers"):
            totals[key] = sum(t[key] for t in torrents)
        for key in ("downloaded_from", "uploaded_to"):
            totals[key] = {kind: sum(t[key][kind] for t in torrents) for kind in ("origin", "agent")}
        return {"peer_id": self.peer_id, "address": str(self.address), "totals": totals, "torrents": torrents}
