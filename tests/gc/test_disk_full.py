"""A collection on a full disk still frees what it can: the disk being full is when it is needed."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import trio

from tests.conftest import random_bytes
from tests.gc.helpers import collect, held_blobs, start_herd
from tests.origin.helpers import fill, tmpfs
from tests.proxy.helpers import digest_of, push_image

REPO = "team/full"


async def test_a_collection_on_a_full_disk_frees_the_deleted_images_blobs(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "48m") as disk:
        herd = await start_herd(nursery, disk / "herd")
        data = herd.config.layout.root
        async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
            deleted, _ = await push_image(proxy, REPO, "old", [random_bytes(4 << 20, seed=70)])
            layer = digest_of(random_bytes(4 << 20, seed=70))
            _, kept_manifest = await push_image(proxy, REPO, "new", [random_bytes(1 << 20, seed=71)])
            assert (await proxy.delete(f"/v2/{REPO}/manifests/{deleted}")).status_code == 202
            filler = fill(disk)
            assert os.statvfs(disk).f_bavail == 0
            # No room for the index to remove the stale links: they are kept, with their blobs, and
            # what no link holds (the deleted manifest's bytes) is freed all the same.
            first = await collect(herd)
            assert (first["swept"], first["links_removed"]) == (1, 0), first
            assert any("removed no stale link" in error for error in first["errors"])
            assert deleted not in held_blobs(data) and layer in held_blobs(data)
            # An operator makes a little room (a log file goes): the next collection frees the rest.
            os.truncate(filler, max(0, filler.stat().st_size - (1 << 20)))
            second = await collect(herd)
            assert (second["swept"], second["links_removed"], second["errors"]) == (2, 2, []), second
            assert layer not in held_blobs(data)
            assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize >= 4 << 20
            assert (await proxy.get(f"/v2/{REPO}/manifests/new")).content == kept_manifest
            filler.unlink()
        await herd.stop()
