"""An origin hashes a committed blob's torrent at once, and seeds it once it is asked for.

Seeding every pushed blob at its commit kept a libtorrent torrent (about 9 KiB, with our side of
it) for each one for swarm.idle_torrent_timeout: under the registry load test that was 1,000-1,400
torrents in the herd, most for blobs nobody asked for, or that agents got inline from the tracker.
"""

from __future__ import annotations

import httpx
import trio

from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from tests.conftest import RunningDaemon, random_bytes
from tests.origin.helpers import blob_path, upload_blob

NS = "library/ondemand"


async def test_a_committed_blob_is_hashed_at_once_and_seeded_when_asked_for(origin: RunningDaemon) -> None:
    node = origin.daemon.node
    engine = node.require_engine()
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        digest = Digest.parse(await upload_blob(client, NS, random_bytes(300 << 10)))
        with trio.fail_after(10):
            while (built := node.metainfo.get(digest)) is None:  # hashed after the commit, off the request
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # what the commit started has long ended
        assert engine.get(built.info_hash) is None, "nobody asked for the blob: its torrent is not in the session"

        response = await client.get(f"{blob_path(NS, str(digest))}/metainfo")
        assert response.status_code == 200
        assert response.content == built.raw, "the metainfo built at the commit, not hashed again"
        torrent = engine.get(Metainfo.parse(response.content, digest).info_hash)
        assert torrent is not None and torrent.finished.is_set(), "asked for, the blob is seeded"
