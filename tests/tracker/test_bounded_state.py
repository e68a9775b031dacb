"""What the tracker keeps per blob and per peer ends with the blob's metainfo or the peer's entry.

A tracker runs for months: each map it fills per blob must empty again when the blob leaves its
bounded metainfo cache, each per-connection one when the connection's entries expire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginClient
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.origins import OriginDirectory
from swarmreg.tracker.peers import PeerStore
from swarmreg.tracker.store import MemoryStore
from swarmreg.tracker.wire import TO_PEER, Announce, AnnounceReply, Peer, PeersPush, decode
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import upload_blob
from tests.tracker.test_tracker_service import channel, me, request

NS = "library/bounded"


async def uploaded(origin: RunningDaemon, count: int) -> list[Digest]:
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        return [Digest.parse(await upload_blob(client, NS, random_bytes(4096 + n))) for n in range(count)]


async def test_the_origins_entries_leave_the_peer_store_with_the_metainfo(
        nursery: trio.Nursery, origin: RunningDaemon) -> None:
    """An origin's entry never expires: it went only when the tracker restarted, one per blob
    ever fetched (about 0.5 KiB each), long after the cache of its metainfo had let it go."""
    digests = await uploaded(origin, 5)
    peers = PeerStore(ttl=60, max_peers=50)
    async with OriginClient(Address.parse(origin.ready["roles"]["origin"]["http"])) as client:
        directory = OriginDirectory(client, MemoryStore(peers), cache_size=2)
        directory.bind(nursery)
        known = [await directory.metainfo(NS, str(digest)) for digest in digests]
        assert len(peers) == 2, "one origin entry for each blob whose metainfo is cached"
        assert peers.peers_for(known[0].info_hash) == []
        assert [p.origin for p in peers.peers_for(known[-1].info_hash)] == [True]

        # Asked for again, the first blob is fetched again and its origin recorded anew.
        await directory.metainfo(NS, str(digests[0]))
        assert [p.origin for p in peers.peers_for(known[0].info_hash)] == [True]
        assert len(peers) == 2


def test_forgetting_an_origin_leaves_the_connections_entries() -> None:
    store = PeerStore(ttl=60, max_peers=50)
    info_hash = "ab" * 32
    origin = Peer("0" * 20, "10.0.0.1", 1000, True, True)
    store.announce(info_hash, origin, owner=("origin", "10.0.0.1:8080"), now=0)
    store.announce(info_hash, Peer("1" * 20, "10.0.0.2", 1001), owner="connection", now=0)
    assert store.forget(info_hash, {("origin", "10.0.0.1:8080")}) == 1
    assert [p.peer_id for p in store.peers_for(info_hash, now=0)] == ["1" * 20]
    # The origin's peer id is free of its entries: a connection may not take it from a live origin,
    # but nothing of the origin is left behind.
    assert store.forget(info_hash, {("origin", "10.0.0.1:8080")}) == 0


@pytest.fixture
async def quick_herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """An origin and a tracker whose peers expire after 3 s of silence (three 1 s intervals)."""
    running = await start_daemon(nursery, make_config(tmp_path / "herd", "tracker.announce_interval=1"),
                                 ["origin", "tracker"])
    yield running
    await running.stop()


async def test_a_connection_whose_entry_expired_hears_no_more_of_the_torrent(quick_herd: RunningDaemon) -> None:
    """The tracker kept, per connection, every torrent it had announced and never left (a download
    that failed, a torrent dropped without a leave), and pushed that torrent's new peers to it for
    as long as the connection lived, although its entry had expired."""
    [digest] = await uploaded(quick_herd, 1)
    async with httpx.AsyncClient(base_url=quick_herd.url("origin")) as client:
        response = await client.get(f"/namespace/{NS}/blobs/{digest}/metainfo")
    info_hash = Metainfo.parse(response.content, digest).info_hash
    async with channel(quick_herd) as silent, channel(quick_herd) as later:
        reply = await request(silent, Announce(1, info_hash, str(digest), NS, me(1)))
        assert isinstance(reply, AnnounceReply) and reply.failure is None
        await trio.sleep(5)  # three intervals of silence, and the expiry that runs each interval
        reply = await request(later, Announce(1, info_hash, str(digest), NS, me(2)))
        assert isinstance(reply, AnnounceReply)
        assert me(1).peer_id not in {p.peer_id for p in reply.peers}, "the silent peer expired"
        with trio.move_on_after(1.5):
            frame = decode(await silent.get_message(), TO_PEER, 1 << 20)
            assert not isinstance(frame, PeersPush), f"pushed a peer of a torrent it is no longer in: {frame}"
        # Announcing again puts it back in the torrent, and it hears of newcomers again.
        await request(silent, Announce(2, info_hash, str(digest), NS, me(1)))
        await request(later, Announce(2, info_hash, str(digest), NS, Peer(me(2).peer_id, "", 7002, True)))
        with trio.fail_after(10):
            while not isinstance(frame := decode(await silent.get_message(), TO_PEER, 1 << 20), PeersPush):
                pass
        assert [p.peer_id for p in frame.peers] == [me(2).peer_id]
