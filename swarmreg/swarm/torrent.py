"""One torrent in the session: its pieces, the events tasks wait on, and its counters."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import libtorrent as lt
import trio

from swarmreg.errors import UNAVAILABLE, ErrorCode, SwarmregError
from swarmreg.swarm.metainfo import Metainfo

log = logging.getLogger(__name__)

PeerAddress = tuple[str, int]
# A download remembers this many of the peers it was handed, to offer them again (see connect).
MAX_KNOWN = 1000


class Torrent:
    """A blob's torrent: which pieces are here, and a change event to wait on.

    The engine's alert pump calls the ``on_*`` methods; download and streaming
    tasks wait with ``wait_piece`` and ``wait_changed``.
    """

    def __init__(self, metainfo: Metainfo, handle: lt.torrent_handle, save_path: Path, namespace: str) -> None:
        self.metainfo = metainfo
        self.namespace = namespace  # the namespace it was first asked for in (announced with it)
        self.handle = handle
        self.save_path = save_path
        self.have = bytearray(metainfo.num_pieces)
        self.have_count = 0
        self.finished = trio.Event()
        self.error: str | None = None
        self.error_code: ErrorCode = UNAVAILABLE  # what a download that met ``error`` answers
        self.hash_failures = 0
        self.pieces_verified = 0  # pieces downloaded and verified here (not those found on disk)
        self.banned_peers = 0
        self.origins: set[PeerAddress] = set()
        # Payload bytes per peer kind, from connections sampled so far.
        self._by_kind = {"origin": [0, 0], "agent": [0, 0]}  # kind -> [downloaded, uploaded]
        # (address, peer id) -> (downloaded, uploaded) when last sampled
        self._connections: dict[tuple[PeerAddress, str], tuple[int, int]] = {}
        self._changed = trio.Event()
        self._focused: set[int] = set()
        self._boosted = False  # the connect boost ran (see connect)
        # Every peer the tracker handed over, offered again while libtorrent has written them off.
        self._known: set[PeerAddress] = set()
        self._reoffered = -math.inf  # when (trio's clock)
        # Seconds from when the torrent was added to its milestones (netsim's breakdown).
        self.added = time.monotonic()
        self.timeline: dict[str, float] = {}
        # When it last had a peer, was read or was asked for (trio's clock): an idle seed leaves
        # the session (SwarmEngine.release_idle).
        self.last_active = trio.current_time()
        self.refresh()

    @property
    def info_hash(self) -> str:
        return self.metainfo.info_hash

    @property
    def path(self) -> Path:
        """Where the blob's file is (while downloading: the downloads directory)."""
        return self.save_path / self.metainfo.digest.hex

    def mark(self, milestone: str, seconds: float | None = None) -> None:
        """Record ``milestone`` once: ``seconds`` if given, else the time since the torrent was added."""
        if milestone not in self.timeline:
            self.timeline[milestone] = round(time.monotonic() - self.added if seconds is None else seconds, 4)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return at the next piece, finish, error or removal."""
        await self._changed.wait()

    async def wait_piece(self, index: int) -> None:
        """Wait until piece ``index`` is here and verified; raises if the torrent fails."""
        while not self.have[index]:
            self.raise_if_failed()
            await self.wait_changed()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise SwarmregError(self.error_code, f"download failed: {self.error}")

    def refresh(self) -> None:
        """Re-read which pieces are here (after a check of existing data)."""
        status = self.handle.status(lt.status_flags_t.query_pieces)
        for index, present in enumerate(status.pieces):
            if present and not self.have[index]:
                self.have[index] = 1
                self.have_count += 1
        if status.is_seeding or status.is_finished:
            self.finished.set()
        self._notify()

    def on_piece(self, index: int) -> None:
        if not self.have[index]:
            self.have[index] = 1
            self.have_count += 1
            self.pieces_verified += 1
            self.mark("first_piece")
            self._notify()

    def on_finished(self) -> None:
        self.sample_peers()
        self.mark("finished")
        self.finished.set()
        self._notify()

    def on_error(self, message: str, *, warn: bool = True, code: ErrorCode = UNAVAILABLE) -> None:
        """Fail the torrent: its waiters raise ``code`` with ``message`` (which clients may see:
        no path in it). ``warn=False`` for an expected end (shutdown) or one logged already."""
        if warn:
            log.warning("torrent %s: %s", self.metainfo.digest, message)
        self.error = message
        self.error_code = code
        self._notify()

    def on_hash_failed(self, index: int) -> None:
        self.hash_failures += 1
        log.warning("torrent %s: piece %d failed its hash check", self.metainfo.digest, index)

    def focus(self, start: int, count: int) -> None:
        """Fetch pieces [start, start + count) before the rest (a streaming window).

        libtorrent picks by priority first and rarity second, so agents that all
        stream the same blob still take different pieces of the window from the
        origin, and trade them, instead of all asking for the same next piece.
        """
        for index in range(start, min(start + count, len(self.have))):
            if not self.have[index] and index not in self._focused:
                self.handle.piece_priority(index, 7)
                self._focused.add(index)

    def hurry(self, index: int) -> None:
        """Make the piece a stream waits for time-critical: requested before everything queued."""
        try:
            self.handle.set_piece_deadline(index, 0)
        except RuntimeError:  # a torrent being removed
            pass

    def connect(self, peers: Iterable[PeerAddress]) -> None:
        """Hand peer addresses from the tracker to libtorrent; it dedups connections itself.

        They go as tracker peers: libtorrent writes a peer off after ``max_failcount`` failed
        dials (in a swarm's first seconds, 60 agents dial each other through full links) and
        takes it back only when a tracker names it again (``peer_list::update_peer`` lowers the
        failcount for that source alone). So while a download has no connect candidate left
        but peers it is not connected to, every hand-over (at most one a second) offers all
        the peers it was ever handed again.

        libtorrent dials handed-over peers in its once-a-second round, so a torrent
        with no peer yet would sit idle for up to a second (measured: 0.8 s of a
        cold pull). Pausing and resuming it runs libtorrent's start-up "connect
        boost" at once; with nobody connected there is nothing to lose. Only once:
        a pause also drops the dials in flight, and an agent in a swarm of 60, handed
        a peer by each announce while still dialling, had its dials cut again and
        again (netsim swarm60: 1,517 in one run). A seed has no hurry (and a pause
        would reset its session counters).
        """
        try:
            status = self.handle.status()
        except RuntimeError:  # a torrent being removed
            return
        if status.is_seeding or status.is_finished:
            self._known.clear()
            self._hand(peers)
            return
        handed = self._hand(peers, remember=True)
        now = trio.current_time()
        if (not status.connect_candidates and status.num_peers < len(self._known)
                and now - self._reoffered >= 1.0):
            self._reoffered = now
            self._hand(self._known)
        if handed and not self._boosted and not status.num_peers:
            self._boosted = True
            self.handle.pause()
            self.handle.resume()

    def _hand(self, peers: Iterable[PeerAddress], remember: bool = False) -> int:
        handed = 0
        for host, port in peers:
            try:
                self.handle.connect_peer((host, port), lt.peer_info.tracker)
            except RuntimeError as error:  # a torrent being removed
                log.debug("connect_peer %s:%d: %s", host, port, error)
                continue
            except TypeError:  # Boost.Python's ArgumentError: a host that is no IP address
                log.debug("connect_peer: %r is not an IP address, skipped", host[:64])
                continue
            if remember and len(self._known) < MAX_KNOWN:
                self._known.add((host, port))
            handed += 1
        return handed

    def sample_peers(self) -> None:
        """Fold the connected peers' payload counters into the per-kind totals."""
        try:
            peers = self.handle.get_peer_info()
        except RuntimeError:
            return
        for peer in peers:
            key = (peer.ip, str(peer.pid))
            kind = "origin" if tuple(peer.ip) in self.origins else "agent"
            down, up = peer.total_download, peer.total_upload
            last_down, last_up = self._connections.get(key, (0, 0))
            if down < last_down or up < last_up:  # a new connection from the same peer
                last_down, last_up = 0, 0
            self._by_kind[kind][0] += down - last_down
            self._by_kind[kind][1] += up - last_up
            self._connections[key] = (down, up)
            if (down, up) != (last_down, last_up):
                self.last_active = trio.current_time()

    def counters(self, *, sample: bool = True) -> dict[str, int]:
        """What only grows while the torrent is in the session (SwarmEngine.counters sums them):
        payload bytes by peer kind (the connected peers' sampled now, with ``sample``), pieces
        verified, hash failures, banned peers."""
        if sample:
            self.sample_peers()
        (down_origin, up_origin), (down_agent, up_agent) = self._by_kind["origin"], self._by_kind["agent"]
        return {"received_origin": down_origin, "received_agent": down_agent, "sent_origin": up_origin,
                "sent_agent": up_agent, "pieces_verified": self.pieces_verified,
                "hash_failures": self.hash_failures, "banned_peers": self.banned_peers}

    def peer_details(self) -> list[dict[str, Any]]:
        """Each connected peer: where it is, who chokes whom, what it has and how fast it goes."""
        try:
            peers = self.handle.get_peer_info()
        except RuntimeError:
            return []
        flags = lt.peer_info
        return [{
            "address": f"{peer.ip[0]}:{peer.ip[1]}",
            "kind": "origin" if tuple(peer.ip) in self.origins else "agent",
            "seed": bool(peer.flags & flags.seed),
            "we_choke": bool(peer.flags & flags.choked),
            "they_choke": bool(peer.flags & flags.remote_choked),
            "we_want": bool(peer.flags & flags.interesting),
            "they_want": bool(peer.flags & flags.remote_interested),
            "requests": peer.download_queue_length,
            "down_rate": peer.payload_down_speed,
            "up_rate": peer.payload_up_speed,
            "downloaded": peer.total_download,
            "uploaded": peer.total_upload,
        } for peer in peers]

    def progress(self) -> dict[str, int]:
        """Bytes held so far and the payload rates now (bytes per second), for the status page."""
        try:
            status = self.handle.status()
        except RuntimeError:  # removed from the session meanwhile
            return {"done": 0, "down_rate": 0, "up_rate": 0}
        return {"done": status.total_wanted_done, "down_rate": status.download_payload_rate,
                "up_rate": status.upload_payload_rate}

    def stats(self, peers: bool = False) -> dict[str, Any]:
        """Counters for operators, tests and netsim (with each peer's state when ``peers``)."""
        self.sample_peers()
        try:
            status = self.handle.status()
            connected, up, down = status.num_peers, status.total_payload_upload, status.total_payload_download
            known, candidates = status.list_peers, status.connect_candidates
        except RuntimeError:
            connected, up, down, known, candidates = 0, 0, 0, 0, 0
        return {
            "digest": str(self.metainfo.digest),
            "info_hash": self.info_hash,
            "size": self.metainfo.size,
            "pieces": self.metainfo.num_pieces,
            "pieces_done": self.have_count,
            "complete": self.finished.is_set(),
            "peers": connected,
            # Peers libtorrent knows of, and those it would still dial (not connected, not failed).
            "known_peers": known,
            "connect_candidates": candidates,
            "uploaded": up,
            "downloaded": down,
            "downloaded_from": {kind: v[0] for kind, v in self._by_kind.items()},
            "uploaded_to": {kind: v[1] for kind, v in self._by_kind.items()},
            "hash_failures": self.hash_failures,
            "banned_peers": self.banned_peers,
            "error": self.error,
            "timeline": self.timeline,
            **({"peer_details": self.peer_details()} if peers else {}),
        }
