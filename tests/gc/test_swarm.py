"""A swept blob leaves the swarm: the origin stops seeding it and the tracker forgets it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import TrackerClient, forget_blobs
from tests.conftest import random_bytes
from tests.gc.helpers import collect, start_herd
from tests.proxy.helpers import digest_of, push_image

REPO = "team/seeded"


async def test_a_swept_blobs_torrent_leaves_the_origin_and_the_tracker(nursery: trio.Nursery,
                                                                       tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    layer = random_bytes(3 << 20, seed=50)  # past tracker.inline_max: it travels as a torrent
    stop = trio.Event()
    tracker = TrackerClient(Address.parse(herd.ready["roles"]["tracker"]["ws"]), port=lambda: 1, peer_id="ab" * 10,
                            announcements=list, on_peers=lambda info_hash, peers: None)
    await nursery.start(tracker.run, stop)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as origin:
        digest, _ = await push_image(proxy, REPO, "v1", [layer])
        await tracker.metainfo(REPO, digest_of(layer))  # as an agent's pull: the origin seeds it
        seeded = {t["digest"] for t in (await origin.get("/stats")).json()["torrents"]}
        assert digest_of(layer) in seeded
        metainfo = herd.config.layout.metainfo / f"{digest_of(layer)[7:]}.torrent"
        assert metainfo.exists()

        assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
        report = await collect(herd)
        assert (report["torrents_removed"], report["trackers_told"], report["errors"]) == (1, 1, [])
        stats = (await origin.get("/stats")).json()
        assert digest_of(layer) not in {t["digest"] for t in stats["torrents"]}
        assert not metainfo.exists() and not metainfo.with_suffix(".namespace").exists()
        # The tracker asks the origins again, instead of handing out its cached metainfo and the origin.
        with pytest.raises(SwarmregError) as unknown:
            await tracker.metainfo(REPO, digest_of(layer))
        assert unknown.value.code.code == "BLOB_UNKNOWN"
    stop.set()


async def test_only_an_origin_makes_the_tracker_forget(nursery: trio.Nursery, tmp_path: Path) -> None:
    secret = "t" * 32
    herd = await start_herd(nursery, tmp_path / "herd", f"cluster.secret={secret}")
    address = Address.parse(herd.ready["roles"]["tracker"]["ws"])
    many = [Digest.of(b"blob %d" % n) for n in range(1000)]  # several frames, answered one at a time
    with pytest.raises(SwarmregError) as refused:
        await forget_blobs(address, many[:1])
    assert refused.value.code.code == "UNAUTHORIZED"
    assert await forget_blobs(address, many, secret=secret) == 0  # none was cached
