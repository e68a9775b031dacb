"""The herd's garbage collector frees exactly what no manifest, link or young commit holds."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.origin.client import OriginClient
from tests.conftest import random_bytes
from tests.gc.helpers import age_everything, collect, data_bytes, held_blobs, image_index, index_db, start_herd
from tests.origin.helpers import upload_blob
from tests.proxy.helpers import OCI_INDEX, digest_of, image_manifest, push_blob, push_image

REPO = "team/app"


def image_blobs(manifest: bytes, digest: str) -> set[str]:
    """The digests an image holds at the origin: its manifest, config and layers."""
    parsed = json.loads(manifest)
    return {digest, parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])}


async def test_a_collection_after_deletes_frees_exactly_the_unreferenced_blobs(nursery: trio.Nursery,
                                                                              tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    data = herd.config.layout.root
    shared, only_a, only_b = (random_bytes(300_000, seed=n) for n in (1, 2, 3))
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        a, a_manifest = await push_image(proxy, REPO, "a", [shared, only_a])
        b, b_manifest = await push_image(proxy, REPO, "b", [shared, only_b])
        a_blobs, b_blobs = image_blobs(a_manifest, a), image_blobs(b_manifest, b)
        assert held_blobs(data) == a_blobs | b_blobs
        untouched = await collect(herd)  # everything is referenced
        assert (untouched["swept"], untouched["links_removed"], untouched["errors"]) == (0, 0, [])
        assert untouched["marked"] == len(a_blobs | b_blobs)

        assert (await proxy.delete(f"/v2/{REPO}/manifests/{a}")).status_code == 202
        before, blob_bytes = data_bytes(data), data_bytes(data, "**/blobs/*/*/*")
        dry = await collect(herd, dry_run=True)
        assert held_blobs(data) == a_blobs | b_blobs  # a dry run removes nothing
        assert data_bytes(data) == before
        only_a_blobs = a_blobs - b_blobs  # A's manifest, config and own layer; the shared layer stays
        assert (dry["dry_run"], dry["swept"], dry["links_removed"]) == (True, len(only_a_blobs), 2)
        assert dry["bytes_freed"] == len(only_a) + len(a_manifest) + json.loads(a_manifest)["config"]["size"]

        real = await collect(herd)
        for key in ("swept", "links_removed", "bytes_freed", "marked", "unreferenced"):
            assert real[key] == dry[key], key
        assert real["dry_run"] is False and real["errors"] == []
        assert held_blobs(data) == b_blobs
        assert data_bytes(data) < before
        assert data_bytes(data, "**/blobs/*/*/*") == blob_bytes - real["bytes_freed"]
        assert (await proxy.get(f"/v2/{REPO}/manifests/b")).content == b_manifest
        assert (await proxy.get(f"/v2/{REPO}/blobs/{digest_of(shared)}")).content == shared
        gone = await proxy.get(f"/v2/{REPO}/blobs/{digest_of(only_a)}")
        assert gone.status_code == 404  # its link went with it

        assert (await proxy.delete(f"/v2/{REPO}/manifests/{b}")).status_code == 202
        last = await collect(herd)
        assert last["swept"] == len(b_blobs) and held_blobs(data) == set()
        async with httpx.AsyncClient(base_url=herd.url("origin")) as origin:
            assert (await origin.get("/stats")).json()["gc"]["swept"] == len(b_blobs)


async def test_a_blob_removed_while_it_is_read_is_still_read_whole(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    layer = random_bytes(48 << 20, seed=7)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as origin:
        digest, _ = await push_image(proxy, REPO, "big", [layer])
        assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
        async with origin.stream("GET", f"/namespace/{REPO.replace('/', '%2F')}/blobs/{digest_of(layer)}") as body:
            chunks = body.aiter_raw(1 << 20)
            received = [await chunks.__anext__()]
            report = await collect(herd)
            assert report["swept"] == 3 and digest_of(layer) not in held_blobs(herd.config.layout.root)
            received += [chunk async for chunk in chunks]
        assert b"".join(received) == layer


async def test_a_manifest_list_keeps_its_children_until_they_go(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    data = herd.config.layout.root
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        children = []
        for n in range(2):
            config, layer = b'{"os":"linux","n":%d}' % n, random_bytes(100_000, seed=10 + n)
            for blob in (config, layer):
                await push_blob(proxy, REPO, blob)
            manifest = image_manifest(config, [layer], oci=True)
            response = await proxy.put(f"/v2/{REPO}/manifests/{digest_of(manifest)}", content=manifest,
                                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert response.status_code == 201, response.text
            children.append((digest_of(manifest), manifest))
        listing = image_index(children)
        response = await proxy.put(f"/v2/{REPO}/manifests/multi", content=listing, headers={"Content-Type": OCI_INDEX})
        assert response.status_code == 201, response.text
        everything = held_blobs(data)
        assert len(everything) == 7  # the index, two manifests, two configs, two layers

        # The children's records go first (by digest): the index still names them, so their bytes stay;
        # their configs and layers, which only they named, go.
        for digest, _ in children:
            assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
        report = await collect(herd)
        assert report["swept"] == 4
        assert held_blobs(data) == {digest_of(listing), *(digest for digest, _ in children)}

        assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest_of(listing)}")).status_code == 202
        assert (await collect(herd))["swept"] == 3
        assert held_blobs(data) == set()


async def test_manifests_recorded_before_their_references_are_read_before_anything_is_swept(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    data = herd.config.layout.root
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        kept, kept_manifest = await push_image(proxy, REPO, "kept", [random_bytes(50_000, seed=20)])
        lost, _ = await push_image(proxy, "team/broken", "lost", [random_bytes(50_000, seed=21)])
        db = index_db(herd)  # as a version-1 database migrated: references unknown
        db.execute("UPDATE manifests SET refs_known = 0")
        db.execute("DELETE FROM refs")
        everything = held_blobs(data)

        # One legacy manifest's bytes are gone: its references cannot be known, so nothing is swept
        # (its layers' links would look unreferenced).
        (data / "blobs" / "sha256" / lost[7:9] / lost[7:]).unlink()
        (data / "backend" / "blobs" / "sha256" / lost[7:9] / lost[7:]).unlink()
        refused = await collect(herd)
        assert refused["swept"] == 0 and refused["links_removed"] == 0 and refused["backfilled"] == 1
        assert any("cannot be read" in error for error in refused["errors"])
        assert held_blobs(data) == everything - {lost}

        assert (await proxy.delete(f"/v2/team/broken/manifests/{lost}")).status_code == 202
        report = await collect(herd)  # the other one was read already; its image stays whole
        assert report["errors"] == [] and report["backfilled"] == 0
        assert report["swept"] == 2  # the lost image's config and layer
        assert held_blobs(data) == image_blobs(kept_manifest, kept)
        assert db.execute("SELECT count(*) FROM manifests WHERE refs_known = 0").fetchone()[0] == 0
        db.close()
        assert (await proxy.get(f"/v2/{REPO}/manifests/kept")).content == kept_manifest


async def test_gc_interval_collects_on_its_own(nursery: trio.Nursery, tmp_path: Path) -> None:
    # A grace period longer than the push (grace = 0 would fail a push the schedule runs during).
    herd = await start_herd(nursery, tmp_path / "herd", "gc.interval=0.2", "gc.grace=1")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as origin:
        digest, _ = await push_image(proxy, REPO, "v1", [random_bytes(10_000, seed=30)])
        assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
        with trio.fail_after(20):
            while held_blobs(herd.config.layout.root):
                await trio.sleep(0.1)
        report = (await origin.get("/stats")).json()["gc"]
        assert report is not None and report["dry_run"] is False


async def test_young_blobs_and_links_stay_for_the_grace_period(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd", "gc.grace=3600")
    data = herd.config.layout.root
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as origin:
        await push_blob(proxy, REPO, random_bytes(5_000, seed=41))  # a push's layer, its manifest not put yet
        await upload_blob(origin, "generic/ns", random_bytes(6_000, seed=42))  # in no index: unreferenced
        young = await collect(herd)  # the link is young: its blob is live; the other blob's file is young
        assert (young["swept"], young["links_removed"], young["kept_young"]) == (0, 0, 1)
        assert len(held_blobs(data)) == 2
        age_everything(herd)
        old = await collect(herd)
        assert (old["swept"], old["links_removed"]) == (2, 1)
        assert held_blobs(data) == set()


async def test_only_the_cluster_may_ask_for_a_collection(nursery: trio.Nursery, tmp_path: Path) -> None:
    secret = "s" * 32
    herd = await start_herd(nursery, tmp_path / "herd", f"cluster.secret={secret}")
    address = Address.parse(herd.ready["roles"]["origin"]["http"])
    async with OriginClient(address) as stranger:
        with pytest.raises(SwarmregError) as refused:
            await stranger.collect_garbage(dry_run=True)
    assert refused.value.code.code in ("UNAUTHORIZED", "BAD_GATEWAY")
    async with httpx.AsyncClient(base_url=herd.url("index")) as index:
        response = await index.post("/gc/mark", params={"grace": "0"})
        assert response.status_code == 401
    async with OriginClient(address, secret=secret) as member:
        assert (await member.collect_garbage(dry_run=True))["errors"] == []
    async with httpx.AsyncClient(base_url=herd.url("origin"), headers={"Authorization": f"Bearer {secret}"}) as raw:
        response = await raw.post("/gc", params={"dry_run": "maybe"})
        assert response.status_code == 400 and response.json()["errors"][0]["code"] == "BAD_REQUEST"


async def test_one_collection_runs_at_a_time(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path / "herd")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest, _ = await push_image(proxy, REPO, "v1", [random_bytes(10_000, seed=60)])
        assert (await proxy.delete(f"/v2/{REPO}/manifests/{digest}")).status_code == 202
    reports: dict[str, list[dict[str, object]]] = {"real": [], "dry": []}

    async def ask(kind: str) -> None:
        reports[kind].append(await collect(herd, dry_run=kind == "dry"))

    async with trio.open_nursery() as asking:
        for kind in ("real", "real", "dry", "real"):
            asking.start_soon(ask, kind)
    # The real requests asked together joined one collection (one sweep of the image's 3 blobs); the
    # dry run ran before or after it, alone, and saw all or nothing of them.
    swept = sorted(int(str(report["swept"])) for report in reports["real"])
    assert swept in ([0, 3, 3], [3, 3, 3], [0, 0, 3])
    assert int(str(reports["dry"][0]["swept"])) in (0, 3)
    assert held_blobs(herd.config.layout.root) == set()
    assert (await collect(herd, dry_run=False))["swept"] == 0



async def test_a_deleted_image_goes_at_once_unless_a_push_of_it_is_under_way(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # The grace period of an hour covers pushes under way; a delete's release does not wait for it.
    herd = await start_herd(nursery, tmp_path / "herd", "gc.grace=3600")
    data = herd.config.layout.root
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        first, first_manifest = await push_image(proxy, REPO, "first", [random_bytes(20_000, seed=90)])
        second, second_manifest = await push_image(proxy, "team/second", "v1", [random_bytes(20_000, seed=91)])
        assert len(image_blobs(first_manifest, first) | image_blobs(second_manifest, second)) == 6
        for repository, digest in ((REPO, first), ("team/second", second)):
            assert (await proxy.delete(f"/v2/{repository}/manifests/{digest}")).status_code == 202
        # A push of the second image's layer is between its commit and its link (noted at the index).
        layer = json.loads(second_manifest)["layers"][0]["digest"]
        async with IndexClient(herd.url("index")) as index:
            await index.note_pending(layer, "0" * 32)
            report = await collect(herd)
            assert (report["swept"], report["swept_released"], report["kept_young"]) == (5, 5, 0), report
            assert held_blobs(data) == {layer}, "the pushed-to layer stays, everything else of both went"
            await index.clear_pending(layer, "0" * 32)  # that push failed: its layer goes next time
        assert (await collect(herd))["swept"] == 1
        assert held_blobs(data) == set()
