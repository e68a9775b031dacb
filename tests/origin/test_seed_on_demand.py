"""An origin hashes a committed blob's torrent at once, and seeds it once it is asked for.

Seeding every pushed blob at its commit kept a libtorrent torrent (about 9 KiB, with our side of
it) for each one for swarm.idle_torrent_timeout: under the registry load test that was 1,000-1,400
torrents in the herd, most for blobs nobody asked for, or that agents got inline from the tracker.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import ConfigError
from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
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


async def test_the_piece_lengths_of_the_configuration_make_the_torrent(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(
        tmp_path / "origin", 'origin.piece_lengths={"0" = "64KiB", "1MiB" = "512KiB"}'), ["origin"])
    async with httpx.AsyncClient(base_url=origin.url("origin")) as client:
        for size, length in ((300 << 10, 64 << 10), (3 << 20, 512 << 10)):
            digest = await upload_blob(client, NS, random_bytes(size, seed=size))
            response = await client.get(f"{blob_path(NS, digest)}/metainfo")
            assert response.status_code == 200
            metainfo = Metainfo.parse(response.content, Digest.parse(digest))
            assert (metainfo.piece_length, metainfo.num_pieces) == (length, -(-size // length))


def test_a_piece_length_that_is_no_power_of_two_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="origin: piece_lengths: a piece length is a power of two"):
        make_config(tmp_path, 'origin.piece_lengths={"0" = "100KiB"}')
