"""What an agent keeps per blob it pulled stays bounded, however many blobs it pulls."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from swarmreg.agent import downloads as downloads_module
from swarmreg.agent.downloads import Downloads
from swarmreg.backends.router import BackendRouter
from swarmreg.digest import Digest
from swarmreg.node import Node
from swarmreg.store.blobstore import BlobStore
from swarmreg.swarm.engine import SwarmEngine
from swarmreg.swarm.metainfo import MetainfoCache
from swarmreg.tracker.client import TrackerClient
from tests.conftest import make_config


async def test_the_inline_blobs_listed_in_the_stats_are_the_latest_ones(nursery: trio.Nursery, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downloads_module, "INLINE_LISTED", 3)
    config = make_config(tmp_path)
    store = BlobStore(tmp_path, fsync=False)
    store.prepare()
    node = Node(config, store, BackendRouter.from_config(config.backends, tmp_path),
                MetainfoCache(config.layout.metainfo))
    node.engine = SwarmEngine(config.swarm)  # not started: no blob here needs a torrent
    tracker = TrackerClient(config.agent.tracker, port=lambda: 0, peer_id="0" * 20,
                            announcements=lambda: [], on_peers=lambda info_hash, peers: None)
    downloads = Downloads(node, tracker, nursery, config.layout.downloads)
    blobs = [b"blob %d" % n for n in range(5)]
    for blob in blobs:
        await downloads._store_inline(Digest.of(blob), blob)  # as a tracker reply with content does
    stats = downloads.inline_stats()
    assert stats["blobs"] == {str(Digest.of(blob)): len(blob) for blob in blobs[2:]}
    assert stats["bytes"] == sum(map(len, blobs))
    assert all(Digest.of(blob) in store for blob in blobs)
