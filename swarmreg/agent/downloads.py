"""Blobs arriving through the swarm, streamed to responses while they arrive.

One Download per blob, shared by every request for it. It takes the metainfo
from the tracker, adds the torrent (pieces from the next one to hash come
first), hashes each piece in order into the whole-blob sha256, and moves the
file into the blob store only when that hash matches the digest (fsynced first,
with ``store.fsync``, as every blob the store holds). Responses
stream every piece that has been hashed, but the last piece only after the
whole blob matched and is held: a blob that does not match its digest is never
served whole; its responses are cut and the file dropped.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from swarmreg.agent.cache import BlobCache
from swarmreg.config import CacheConfig
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, INTERNAL, UNAVAILABLE, SwarmregError, log_failure
from swarmreg.node import Node
from swarmreg.singleflight import SingleFlight
from swarmreg.store.blobstore import fsync_path
from swarmreg.store.files import ChunkedRange
from swarmreg.swarm.engine import SwarmEngine
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.swarm.torrent import Torrent
from swarmreg.tracker.client import Announcement, TrackerClient
from swarmreg.tracker.wire import MetainfoReply

log = logging.getLogger(__name__)

# Pieces a download keeps in memory after hashing them (at most 64 MiB with 16 MiB pieces).
RECENT_PIECES = 4
# Blobs that came inline listed in the agent's stats: the latest ones (about 150 bytes each).
INLINE_LISTED = 1000


class Download:
    """One blob on its way in; responses wait on it piece by piece."""

    def __init__(self, namespace: str, digest: Digest) -> None:
        self.namespace = namespace
        self.digest = digest
        self.metainfo: Metainfo | None = None
        self.torrent: Torrent | None = None
        self.hashed = 0  # pieces [0, hashed) went into the whole-blob hash
        self.verified = False  # the whole blob matched its digest and is held (durably, with store.fsync)
        self.error: SwarmregError | None = None
        # The last pieces hashed, for responses streaming right behind the hash.
        self.recent: OrderedDict[int, bytes] = OrderedDict()
        self.started = trio.Event()  # metainfo known (or failed)
        self.done = trio.Event()
        self._changed = trio.Event()

    def remember(self, piece: int, data: bytes) -> None:
        self.recent[piece] = data
        while len(self.recent) > RECENT_PIECES:
            self.recent.popitem(last=False)

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def fail(self, error: SwarmregError) -> None:
        self.error = error
        self.started.set()
        self.done.set()
        self.notify()

    async def wait_released(self, piece: int) -> None:
        """Wait until a response may send ``piece``: hashed, and for the last piece, verified and held."""
        assert self.metainfo is not None
        last = self.metainfo.num_pieces - 1
        while not (self.hashed > piece and (piece < last or self.verified)):
            if self.error is not None:
                raise self.error
            await self._changed.wait()


class DownloadBody(ChunkedRange):
    """A body (``swarmreg.store.files.Body``) that streams bytes [start, end) of a Download as
    pieces are released."""

    def __init__(self, download: Download, engine: SwarmEngine, start: int, end: int, chunk_size: int) -> None:
        super().__init__(start, end, chunk_size)
        self.download = download
        self.engine = engine

    async def aclose(self) -> None:
        """Nothing to release: pieces are read whole through the engine."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        download = self.download
        metainfo, torrent = download.metainfo, download.torrent
        assert metainfo is not None and torrent is not None
        offset = self.start
        while offset < self.end:
            piece = offset // metainfo.piece_length
            await download.wait_released(piece)
            piece_start, piece_end = metainfo.piece_range(piece)
            data = download.recent.get(piece) or await self._piece(torrent, piece)
            first, last = offset - piece_start, min(piece_end, self.end) - piece_start
            if first == 0 and last == len(data) and len(data) <= self.chunk_size:
                yield data  # a whole piece: sent as it is, not copied
            else:
                view = memoryview(data)[first:last]
                for at in range(0, len(view), self.chunk_size):
                    yield bytes(view[at:at + self.chunk_size])
            offset += last - first

    async def _piece(self, torrent: Torrent, piece: int) -> bytes:
        """The piece through libtorrent; once the blob is held and its torrent left the session
        (released for being idle while a slow client read on), from the file in the store."""
        if not self._left_session(torrent):
            try:
                return await self.engine.read_piece(torrent, piece)
            except SwarmregError:
                if not self._left_session(torrent):
                    raise
        start, end = torrent.metainfo.piece_range(piece)
        return await trio.to_thread.run_sync(_read_range, torrent.path, start, end - start)

    def _left_session(self, torrent: Torrent) -> bool:
        # A verified download's file was moved into the store (libtorrent wrote it all first).
        return self.download.verified and self.engine.get(torrent.info_hash) is not torrent


def _unlink(path: Path) -> None:
    """Remove ``path`` if it is there (blocking)."""
    path.unlink(missing_ok=True)


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        data = os.pread(file.fileno(), length, offset)
    if len(data) != length:
        raise SwarmregError(UNAVAILABLE, "the blob's file is shorter than its metainfo")
    return data


# How long a stream waits for its next piece before making it time-critical.
HURRY_AFTER = 0.5
# Pieces up to this size are hashed in the event loop (0.15 ms for 256 KiB here): a worker
# thread's hand-off costs more than that, in wake-ups on both sides; larger ones go to a thread.
INLINE_HASH = 1 << 20


class Downloads:
    """Starts at most one Download per blob, in the agent's nursery, and keeps them until done."""

    def __init__(self, node: Node, tracker: TrackerClient, nursery: trio.Nursery, directory: Path,
                 cache: BlobCache | None = None) -> None:
        self.node = node
        self.engine = node.require_engine()
        self.tracker = tracker
        # In the agent's nursery: a client that hangs up does not stop a shared download.
        self._active = SingleFlight[Digest, Download, None]("download", nursery, on_error=Download.fail)
        self.directory = directory
        # What the agent keeps: every write reserves its room there first (unbounded by default).
        self.cache = cache or BlobCache(CacheConfig(), node.config.layout, node.store)
        self.stall_timeout = node.config.agent.stall_timeout
        self.window = node.config.agent.stream_window
        self.progress_interval = node.config.agent.progress_interval
        # The latest blobs that came in the tracker's reply (digest -> size), and the bytes of all.
        self._inline: OrderedDict[Digest, int] = OrderedDict()
        self._inline_bytes = 0
        self._nursery = nursery
        # Held blobs whose torrents left the session for being idle; seeded again when pulled.
        # At most one entry per blob in the store.
        self._released: set[Digest] = set()
        self.engine.on_release.append(self._on_release)

    def active(self, digest: Digest) -> bool:
        """Whether the blob's Download runs."""
        return self._active.running(digest) is not None

    async def start(self, namespace: str, digest: Digest) -> Download:
        """The blob's Download, started if needed, once its metainfo is known (or raises)."""
        download = self._active.start(digest, self._run, partial(Download, namespace, digest)).state
        await download.started.wait()
        if download.error is not None and download.metainfo is None:
            raise download.error
        return download

    async def stream(self, namespace: str, digest: Digest, start: int, end: int) -> DownloadBody:
        """A body for bytes [start, end) of a blob that arrives through the swarm."""
        download = await self.start(namespace, digest)
        # Answer only once the first piece may be sent: a download that fails before then
        # is an error response, not a 200 cut off after its headers.
        assert download.metainfo is not None
        await download.wait_released(start // download.metainfo.piece_length)
        return DownloadBody(download, self.engine, start, end, self.node.config.store.chunk_size)

    async def metainfo(self, namespace: str, digest: Digest) -> Metainfo:
        """The blob's metainfo: from the disk cache, else from the tracker (then cached).

        A small blob's bytes come with it; they are stored (if they match the digest),
        so the caller finds the blob held and no torrent is needed to serve it.
        """
        metainfo = self.node.metainfo.get(digest)
        if metainfo is None:
            metainfo = await self.accept(namespace, digest, await self.tracker.metainfo(namespace, str(digest)))
        return metainfo

    async def accept(self, namespace: str, digest: Digest, reply: MetainfoReply) -> Metainfo:
        """Take the metainfo (and a small blob's bytes) of a tracker's reply: cached, stored."""
        assert reply.metainfo is not None, "the client raises for a reply without metainfo"
        try:
            metainfo = Metainfo.parse(reply.metainfo, digest)
        except SwarmregError:  # the tracker's fault, not ours (parse logged libtorrent's reason)
            raise SwarmregError(BAD_GATEWAY, f"the tracker sent invalid metainfo for {digest}") from None
        self.node.metainfo.put(metainfo, namespace)
        if reply.content is not None and digest not in self.node.store:
            await self._store_inline(digest, reply.content)
        return metainfo

    async def _store_inline(self, digest: Digest, content: bytes) -> None:
        async def once() -> AsyncIterator[bytes]:
            yield content

        try:
            await self.cache.reserve(digest, len(content))
        except SwarmregError as error:  # no room: the download that follows says so
            log.info("inline content of %s not kept: %s", digest, error.message)
            return
        try:
            await self.node.store.write(digest, once())
        except SwarmregError as error:  # the tracker sent wrong bytes: the swarm will fetch them
            self.cache.release(digest)
            log.warning("inline content of %s refused: %s", digest, error.message)
        except BaseException:
            self.cache.release(digest)
            raise
        else:
            self.cache.commit(digest, len(content))
            self._inline[digest] = len(content)
            self._inline_bytes += len(content)
            while len(self._inline) > INLINE_LISTED:
                self._inline.popitem(last=False)

    @property
    def inline_bytes(self) -> int:
        """Bytes of every blob that came inline with its metainfo."""
        return self._inline_bytes

    def inline_stats(self) -> dict[str, Any]:
        """Counters of the blobs that came inline with their metainfo, without a torrent: the
        latest INLINE_LISTED of them, and the bytes of all."""
        return {"blobs": {str(d): size for d, size in self._inline.items()}, "bytes": self._inline_bytes}

    def _on_release(self, torrent: Torrent) -> None:
        self._released.add(torrent.metainfo.digest)
        self._nursery.start_soon(self.tracker.leave, torrent.info_hash)  # not handed out as a peer

    async def drop(self, digest: Digest, partial: bool) -> None:
        """Let an evicted blob go (BlobCache's Drop): its torrent leaves the session and the tracker
        hears it left, then its file goes, and its metainfo unless a new download of it runs, so
        the next pull fetches it through the swarm as the first one did. ``partial``: a stopped
        download's file, under downloads/."""
        self._released.discard(digest)
        metainfo = self.node.metainfo.get(digest)
        if metainfo is not None:
            if (torrent := self.engine.get(metainfo.info_hash)) is not None:
                await self.engine.remove(torrent, delete_files=partial, warn=False)
            await self.tracker.leave(metainfo.info_hash)  # no longer handed out as a peer of it
        path = self.directory / digest.hex if partial else self.node.store.path(digest)
        await trio.to_thread.run_sync(_unlink, path)
        if not self.active(digest):
            self.node.metainfo.delete(digest)

    def reseed(self, namespace: str, digest: Digest) -> None:
        """The blob is served from the store: if its torrent was released, seed it again (in the
        background), so a blob pulled lately stays in the swarm."""
        if digest in self._released:
            self._released.discard(digest)
            self._nursery.start_soon(self._reseed, namespace, digest)

    async def _reseed(self, namespace: str, digest: Digest) -> None:
        try:
            metainfo = self.node.metainfo.get(digest)
            if metainfo is None or digest not in self.node.store:
                return
            await self._seed(metainfo, namespace, digest)
        except SwarmregError as error:
            log.info("seeding %s again: %s", digest, error.message)
        except Exception:  # background work: the agent serves on
            log.exception("seeding %s again", digest)

    async def _run(self, download: Download) -> None:
        # On failure, SingleFlight hands the error (INTERNAL for a bug, UNAVAILABLE at
        # shutdown) to Download.fail, which ends the download's responses.
        try:
            await self._download(download)
        except SwarmregError as error:
            log.warning("download of %s failed: %s", download.digest, error.message)
            self.node.status.record(f"download of {download.namespace}@{download.digest}", error.message)
            await self._drop_failed(download)
            self._release(download)
            raise
        except BaseException:
            self._release(download)
            raise
        download.done.set()
        download.notify()

    def _release(self, download: Download) -> None:
        """Give back the failed download's reservation; a file it leaves stays counted."""
        torrent = download.torrent
        kept = torrent is not None and self.engine.get(torrent.info_hash) is torrent
        self.cache.release(download.digest, kept=kept)

    async def _drop_failed(self, download: Download) -> None:
        """Remove a torrent that failed (a full disk), file and all: the space goes back, and
        the next request starts afresh instead of meeting the same failed torrent."""
        torrent = download.torrent
        if torrent is None or torrent.error is None or self.engine.get(torrent.info_hash) is not torrent:
            return  # a stalled download keeps its torrent and pieces for the next request
        try:
            with trio.CancelScope(shield=True):
                await self.engine.remove(torrent, delete_files=True)
        except Exception as error:
            log_failure(log, f"removing the failed torrent of {download.digest}", error)

    async def _download(self, download: Download) -> None:
        digest = download.digest
        asked = trio.current_time()
        metainfo = download.metainfo = await self.metainfo(download.namespace, digest)
        # Room first (evicting what must go), so the cache stays within its limits while this writes.
        await self.cache.reserve(digest, metainfo.size)
        torrent = download.torrent = await self.engine.add(metainfo, self.directory, namespace=download.namespace)
        torrent.mark("metainfo", trio.current_time() - asked)  # the tracker round trip (or the cache)
        download.started.set()
        download.notify()
        log.debug("%s: torrent added (%d pieces of %d bytes)", digest, metainfo.num_pieces, metainfo.piece_length)
        torrent.focus(0, self.window)  # before any peer: the first requests go to the front
        peers = await self.tracker.announce(Announcement(metainfo.info_hash, str(digest), download.namespace, False))
        log.debug("%s: announced, %d peer(s)", digest, len(peers))
        torrent.mark("announced")
        reporting = trio.CancelScope()
        if self.progress_interval:
            self._nursery.start_soon(self._report_progress, torrent, reporting)
        try:
            await self._hash_pieces(download, torrent)
        finally:
            reporting.cancel()
        torrent.mark("verified")
        # The last piece goes out only once the blob is held: a client that has it all
        # finds it on this agent, as a pusher finds a blob the origin acknowledged.
        await self._commit(torrent)
        torrent.mark("committed")
        download.verified = True
        download.notify()
        log.info("downloaded %s (%d bytes)", digest, metainfo.size)
        await self._announce_quietly(torrent, complete=True)

    async def _hash_pieces(self, download: Download, torrent: Torrent) -> None:
        """Feed the pieces in order into the whole-blob hash as they arrive; the blob must match its digest."""
        digest, metainfo = download.digest, torrent.metainfo
        hasher = digest.hasher()
        for piece in range(metainfo.num_pieces):
            torrent.focus(piece, self.window)
            await self._wait_piece(torrent, piece)
            # A piece libtorrent checked in memory but could not write (a full disk) reads back
            # wrong: the torrent's own error is the reason, not the digest.
            torrent.raise_if_failed()
            data = await self.engine.read_piece(torrent, piece)
            if len(data) <= INLINE_HASH:
                hasher.update(data)
            else:
                await trio.to_thread.run_sync(hasher.update, data)
            download.remember(piece, data)
            download.hashed = piece + 1
            download.notify()
            if piece == 0:
                log.debug("%s: first piece verified", digest)
        torrent.raise_if_failed()
        if hasher.hexdigest() != digest.hex:
            await self.engine.remove(torrent, delete_files=True)
            self.node.metainfo.delete(digest)
            raise SwarmregError(INTERNAL, "the swarm delivered a blob that does not match its digest")

    async def _report_progress(self, torrent: Torrent, scope: trio.CancelScope) -> None:
        """Announce the download's progress every ``progress_interval`` until it has every
        piece, so that the tracker notices one that makes none (and rescues it)."""
        with scope:
            while True:
                await trio.sleep(self.progress_interval)
                if torrent.finished.is_set() or torrent.error is not None:
                    return
                try:
                    await self.tracker.announce(Announcement(
                        torrent.info_hash, str(torrent.metainfo.digest), torrent.namespace, False,
                        progress=torrent.have_count))
                except SwarmregError as error:  # the tracker's connection logs its own trouble
                    log.debug("progress announce of %s: %s", torrent.metainfo.digest, error.message)
                except Exception:  # background work: the download goes on
                    log.exception("progress announce of %s", torrent.metainfo.digest)

    async def _commit(self, torrent: Torrent) -> None:
        """Move a verified download under its digest, durably: only then is the blob held.

        As the origin's store does: with ``store.fsync`` the file is fsynced before
        it appears under its digest (after libtorrent has written all of it), a new
        shard directory in its parent, and the shard once the file is in it.
        """
        store = self.node.store
        digest = torrent.metainfo.digest
        if store.fsync:
            await self.engine.flush(torrent)
            await trio.to_thread.run_sync(fsync_path, torrent.path)
        shard = await trio.to_thread.run_sync(store.make_shard, digest)
        await self.engine.move(torrent, shard)
        self.cache.commit(digest, torrent.metainfo.size)
        if store.fsync:
            await trio.to_thread.run_sync(partial(fsync_path, shard, directory=True))

    async def _wait_piece(self, torrent: Torrent, piece: int) -> None:
        """Wait for ``piece``; fail when no piece at all arrives for the stall timeout.

        A piece late by HURRY_AFTER gets a deadline. Not sooner: libtorrent asks for
        time-critical pieces a block at a time, which starved the request queue and
        made a one-peer cold pull of 256 MiB half as fast.
        """
        with trio.move_on_after(HURRY_AFTER):
            while not torrent.have[piece] and torrent.error is None:
                await torrent.wait_changed()
        if not torrent.have[piece]:
            torrent.hurry(piece)
        while not torrent.have[piece]:
            torrent.raise_if_failed()
            progress = torrent.have_count
            with trio.move_on_after(self.stall_timeout):
                while torrent.have_count == progress and not torrent.have[piece] and torrent.error is None:
                    await torrent.wait_changed()
            if torrent.have_count == progress and not torrent.have[piece] and torrent.error is None:
                raise SwarmregError(UNAVAILABLE, f"no piece arrived for {self.stall_timeout:g} s",
                                    {"digest": str(torrent.metainfo.digest), "pieces": torrent.have_count})

    async def seed_held(self, namespace: str, digest: Digest) -> None:
        """Seed a blob the store holds (one that came another way than the swarm), announced
        complete, so later agents get it from here."""
        await self._seed(await self.metainfo(namespace, digest), namespace, digest)

    async def _seed(self, metainfo: Metainfo, namespace: str, digest: Digest) -> None:
        """Seed the held blob, announced complete."""
        torrent = await self.engine.add(metainfo, self.node.store.path(digest).parent, seed=True, namespace=namespace)
        await self._announce_quietly(torrent, complete=True)

    async def _announce_quietly(self, torrent: Torrent, *, complete: bool) -> None:
        try:
            await self.tracker.announce(Announcement(
                torrent.info_hash, str(torrent.metainfo.digest), torrent.namespace, complete))
        except SwarmregError as error:
            log.info("announce of %s: %s", torrent.metainfo.digest, error.message)
