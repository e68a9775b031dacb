"""Images pushed straight into an upstream docker-registry over its Registry V2 API."""

from __future__ import annotations

import json
import ssl

import attrs
import httpx

from tests.proxy.helpers import DOCKER_MANIFEST, OCI_INDEX, descriptor, digest_of, image_manifest


@attrs.frozen
class Pushed:
    """What was pushed: the manifest's digest and bytes, and every blob (config first) by digest."""

    digest: str
    manifest: bytes
    blobs: dict[str, bytes]


async def _push_blob(client: httpx.AsyncClient, repository: str, blob: bytes) -> str:
    # POST then PUT ?digest=: the monolithic POST ?digest= is one docker-registry 2.8 does not take.
    started = await client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = httpx.URL(started.headers["Location"])  # keeps its _state query
    done = await client.put(location.copy_merge_params({"digest": digest_of(blob)}), content=blob)
    assert done.status_code == 201, done.text
    return digest_of(blob)


async def push_upstream_image(base_url: str, repository: str, tag: str | None, layers: list[bytes], *,
                              arch: str = "amd64", auth: httpx.Auth | None = None,
                              verify: ssl.SSLContext | bool = True) -> Pushed:
    """A Docker schema 2 image (config + ``layers``) under ``tag`` (by digest only when None)."""
    async with httpx.AsyncClient(base_url=base_url, auth=auth, verify=verify, timeout=60) as client:
        return await _push_image(client, repository, tag, layers, arch)


async def push_upstream_images(base_url: str, repository: str, count: int) -> list[Pushed]:
    """``count`` small images by digest, each with a config of its own (one connection)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        return [await _push_image(client, repository, None, [], f"arch{i}") for i in range(count)]


async def _push_image(client: httpx.AsyncClient, repository: str, tag: str | None, layers: list[bytes],
                      arch: str) -> Pushed:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [digest_of(layer) for layer in layers]}}).encode()
    blobs = {await _push_blob(client, repository, blob): blob for blob in (config, *layers)}
    manifest = image_manifest(config, layers)
    digest = digest_of(manifest)
    response = await client.put(f"/v2/{repository}/manifests/{tag or digest}", content=manifest,
                                headers={"Content-Type": DOCKER_MANIFEST})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    return Pushed(digest, manifest, blobs)


async def push_upstream_index(base_url: str, repository: str, tag: str, children: list[Pushed], *,
                              archs: tuple[str, ...] = ("amd64", "arm64")) -> Pushed:
    """An OCI index of ``children`` (pushed by digest before) under ``tag``."""
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(DOCKER_MANIFEST, child.manifest, platform={"os": "linux", "architecture": arch})
        for child, arch in zip(children, archs, strict=True)]}).encode()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        response = await client.put(f"/v2/{repository}/manifests/{tag}", content=index,
                                    headers={"Content-Type": OCI_INDEX})
        assert response.status_code == 201, response.text
    return Pushed(digest_of(index), index, {})
