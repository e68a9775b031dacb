"""Collections racing pushes of the layers they are removing lose nothing (docs/gc.md, "Why a push never
loses a blob"): every manifest PUT succeeds and every pushed image pulls back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.conftest import random_bytes
from tests.gc.helpers import age_everything, collect, pull_image, start_herd
from tests.proxy.helpers import DOCKER_MANIFEST, digest_of, image_manifest, push_blob, push_image

# Longer than any one push here takes, shorter than the age the deleted images' data is given.
GRACE = 5.0
BASE = [random_bytes(150_000, seed=100 + n) for n in range(4)]


async def docker_push(proxy: httpx.AsyncClient, repository: str, tag: str, blobs: list[bytes],
                      mount_from: str | None) -> bytes:
    """Push as docker does: HEAD each blob and skip it when present, else mount it from
    ``mount_from`` when given, else upload it; then the manifest. Returns the manifest."""
    config, layers = blobs[0], blobs[1:]
    for blob in blobs:
        digest = digest_of(blob)
        if (await proxy.head(f"/v2/{repository}/blobs/{digest}")).status_code == 200:
            continue
        if mount_from is not None:
            mounted = await proxy.post(f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": mount_from})
            if mounted.status_code == 201:
                continue
            assert mounted.status_code == 202, mounted.text  # not mountable: a session to upload into
            done = await proxy.put(mounted.headers["location"], params={"digest": digest}, content=blob)
            assert done.status_code == 201, done.text
            continue
        await push_blob(proxy, repository, blob)
    manifest = image_manifest(config, layers)
    response = await proxy.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
                               headers={"Content-Type": DOCKER_MANIFEST})
    assert response.status_code == 201, response.text
    return manifest


async def test_collections_racing_pushes_of_the_same_layers_lose_nothing(nursery: trio.Nursery,
                                                                         tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd", f"gc.grace={GRACE}")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        # Images that used the base layers, pushed long ago and deleted: their data is garbage now.
        for repository in ("team/app", "team/source"):
            for n in range(2):
                digest, _ = await push_image(proxy, repository, f"old{n}", [BASE[n], BASE[n + 2], b"old %d" % n])
                assert (await proxy.delete(f"/v2/{repository}/manifests/{digest}")).status_code == 202
        age_everything(herd)

        swept = 0
        pushing_done = trio.Event()

        async def collect_until_pushed() -> None:
            nonlocal swept
            while not pushing_done.is_set():
                report = await collect(herd)
                assert report["errors"] == []
                swept += report["swept"]

        pushed: dict[tuple[str, str], bytes] = {}

        async def push(n: int) -> None:
            repository, mount_from = [("team/app", None), ("team/other", "team/source"), ("team/app", None)][n % 3]
            config = json.dumps({"os": "linux", "image": n}).encode()
            layers = [BASE[n % 4], BASE[(n + 1) % 4], b"own layer %d" % n]
            pushed[(repository, f"new{n}")] = await docker_push(proxy, repository, f"new{n}", [config, *layers],
                                                                mount_from)

        async def pull_all() -> None:
            for (repository, tag), manifest in pushed.items():
                blobs = await pull_image(proxy, repository, tag)
                assert blobs[digest_of(manifest)] == manifest
                assert len(blobs) == 2 + len(json.loads(manifest)["layers"])

        async with trio.open_nursery() as racing:
            racing.start_soon(collect_until_pushed)
            for round_ in range(6):
                # Each round pushes images whose layers the last round's deletes just made garbage.
                async with trio.open_nursery() as pushes:
                    for n in range(4 * round_, 4 * round_ + 4):
                        pushes.start_soon(push, n)
                await pull_all()
                if round_ < 5:
                    for (repository, _tag), manifest in pushed.items():
                        response = await proxy.delete(f"/v2/{repository}/manifests/{digest_of(manifest)}")
                        assert response.status_code == 202
                    pushed.clear()
                    age_everything(herd)
            pushing_done.set()
        assert swept > 0  # the collections did remove the deleted images' data while the pushes ran

        # Aged and collected once more: the last round's images are referenced and stay whole.
        age_everything(herd)
        report = await collect(herd)
        assert report["errors"] == []
        await pull_all()
