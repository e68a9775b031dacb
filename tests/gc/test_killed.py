"""A herd killed in the middle of a sweep starts again consistent, and the next collection finishes
the job: nothing live was touched, nothing half-removed is left behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import trio

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.origin.client import OriginClient
from tests.conftest import random_bytes
from tests.gc.helpers import HERD, held_blobs, pull_image
from tests.proxy.helpers import push_image

REPO = "team/survivor"
GARBAGE = 20_000


def plant_garbage(data_dir: Path) -> set[str]:
    """Zero-length blobs no index knows of, two days old (as if their images were deleted long ago)."""
    old = os.stat(data_dir).st_mtime - 2 * 86400
    planted = set()
    for n in range(GARBAGE):
        hex_ = hashlib.sha256(b"garbage %d" % n).hexdigest()
        path = data_dir / "blobs" / "sha256" / hex_[:2] / hex_
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (old, old))
        planted.add(f"sha256:{hex_}")
    return planted


async def test_a_herd_killed_mid_sweep_is_collected_again(spawn: Any, tmp_path: Path) -> None:
    data = tmp_path / "herd"
    herd = await spawn("herd", HERD, "gc.grace=0", data_dir=data)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest, manifest = await push_image(proxy, REPO, "v1", [random_bytes(200_000, seed=80)])
        image = await pull_image(proxy, REPO, "v1")
    garbage = plant_garbage(data)

    async def collect_until_killed() -> None:
        async with OriginClient(Address.parse(herd.address("origin"))) as origin:
            try:
                await origin.collect_garbage(dry_run=False)
            except SwarmregError:  # the herd died under it
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_until_killed)
        with trio.fail_after(60):
            while len(garbage & held_blobs(data)) > GARBAGE * 3 // 4:  # a quarter swept: kill it now
                await trio.sleep(0.01)
        herd.kill()
        await herd.wait()
    left = garbage & held_blobs(data)
    assert 0 < len(left) < GARBAGE  # killed mid-sweep

    again = await spawn("herd-again", HERD, "gc.grace=0", data_dir=data)
    async with OriginClient(Address.parse(again.address("origin"))) as origin:
        report = await origin.collect_garbage(dry_run=False)
    assert report["swept"] == len(left) and report["errors"] == []
    assert held_blobs(data) == set(image)
    async with httpx.AsyncClient(base_url=again.url("proxy"), timeout=60) as proxy:
        assert await pull_image(proxy, REPO, "v1") == image
    assert image[digest] == manifest
