"""Herds with images pushed to them, preheat jobs posted and followed, what an origin seeds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.proxy.helpers import DOCKER_MANIFEST, OCI_INDEX, descriptor, digest_of, push_blob, push_image

HERD = ["origin", "tracker", "index", "proxy"]


@attrs.frozen
class Image:
    """A pushed image (or index): its repository and tag, manifest digest, and every blob it
    names by digest (manifests included) with its size."""

    repository: str
    tag: str
    digest: str
    blobs: dict[str, int]

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


async def push_test_image(proxy: httpx.AsyncClient, repository: str, tag: str, layers: list[bytes]) -> Image:
    digest, manifest = await push_image(proxy, repository, tag, layers)
    config = json.loads(manifest)["config"]
    blobs = {digest: len(manifest), config["digest"]: config["size"], **{digest_of(la): len(la) for la in layers}}
    return Image(repository, tag, digest, blobs)


async def push_multiarch(proxy: httpx.AsyncClient, repository: str, tag: str,
                         layers: dict[str, list[bytes]]) -> tuple[Image, dict[str, Image]]:
    """One image per architecture (pushed by digest), and an OCI index of them under ``tag``."""
    children: dict[str, Image] = {}
    entries = []
    for arch, arch_layers in layers.items():
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [digest_of(layer) for layer in arch_layers]}}).encode()
        for blob in (config, *arch_layers):
            await push_blob(proxy, repository, blob)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                               "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                               "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)
                                          for layer in arch_layers]}).encode()
        response = await proxy.put(f"/v2/{repository}/manifests/{digest_of(manifest)}", content=manifest,
                                   headers={"Content-Type": DOCKER_MANIFEST})
        assert response.status_code == 201, response.text
        children[arch] = Image(repository, "", digest_of(manifest), {
            digest_of(manifest): len(manifest), digest_of(config): len(config),
            **{digest_of(layer): len(layer) for layer in arch_layers}})
        entries.append(descriptor(DOCKER_MANIFEST, manifest, platform={"os": "linux", "architecture": arch}))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    response = await proxy.put(f"/v2/{repository}/manifests/{tag}", content=index,
                               headers={"Content-Type": OCI_INDEX})
    assert response.status_code == 201, response.text
    every = {digest_of(index): len(index)}
    for child in children.values():
        every.update(child.blobs)
    return Image(repository, tag, digest_of(index), every), children


async def start_herd(nursery: trio.Nursery, data_dir: Path, *overrides: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(data_dir, "store.fsync=false", *overrides), HERD)


def forget_seeds(data_dir: Path) -> None:
    """Drop an origin's cached metainfo (while it is stopped): started again, it seeds nothing
    until asked for a blob's metainfo."""
    shutil.rmtree(data_dir / "metainfo", ignore_errors=True)


async def seeded(origin_url: str) -> set[str]:
    """The digests an origin's swarm session seeds now."""
    async with httpx.AsyncClient(timeout=30) as client:
        stats = (await client.get(f"{origin_url}/stats")).json()
    return {torrent["digest"] for torrent in stats["torrents"] if torrent["complete"]}


async def post_job(proxy: httpx.AsyncClient, images: list[str], **fields: Any) -> httpx.Response:
    return await proxy.post("/preheat", json={"images": images, **fields})


async def follow(proxy: httpx.AsyncClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the job until it is no longer running; its last progress document."""
    with trio.fail_after(timeout):
        while True:
            response = await proxy.get(f"/preheat/{job_id}")
            assert response.status_code == 200, response.text
            doc: dict[str, Any] = response.json()
            assert doc["status"] in ("running", "done", "failed")
            if doc["status"] != "running":
                return doc
            await trio.sleep(0.1)


async def preheat(proxy: httpx.AsyncClient, images: list[str], **fields: Any) -> dict[str, Any]:
    """Post a job and follow it to its end."""
    response = await post_job(proxy, images, **fields)
    assert response.status_code == 202, response.text
    assert set(response.json()) >= {"id"}
    return await follow(proxy, response.json()["id"])
