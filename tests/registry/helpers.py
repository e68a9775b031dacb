"""Content in upstream-named repositories, put there the way the herd itself records what it
fetches: blobs into the origin (``through=False``: no backend holds an upstream's namespace) and
manifest records, tags and blob links into the index, with the internal clients."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.index.client import IndexClient
from swarmreg.origin.client import OriginClient
from tests.proxy.helpers import DOCKER_MANIFEST, digest_of, image_manifest


@attrs.frozen
class Seeded:
    """An image recorded in a repository: its manifest's digest and bytes, and every blob."""

    digest: str
    manifest: bytes
    blobs: dict[str, bytes]  # config and layers by digest


def small_image(seed: str, layers: int = 2) -> tuple[bytes, dict[str, bytes]]:
    """A Docker image manifest over a config and ``layers`` small layers unique to ``seed``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    blobs = [f"{seed} layer {i} ".encode() * (100 + i) for i in range(layers)]
    return image_manifest(config, blobs), {digest_of(b): b for b in (config, *blobs)}


def herd_of(roles: dict[str, dict[str, str]]) -> tuple[str, str]:
    """(origin, index) addresses of an in-process herd's ready roles."""
    return roles["origin"]["http"], roles["index"]["http"]


async def seed_image(herd: tuple[str, str], repository: str, tags: list[str], seed: str, *,
                     media_type: str = DOCKER_MANIFEST) -> Seeded:
    """Record image ``seed`` in ``repository`` under ``tags`` on the herd whose origin and index
    listen at ``herd``, as a pull-through fetch would."""
    manifest, blobs = small_image(seed)
    digest = digest_of(manifest)
    async with OriginClient(Address.parse(herd[0])) as origin, IndexClient(herd[1]) as index:
        for blob, data in blobs.items():
            await origin.upload_bytes(repository, Digest.parse(blob), data, through=False)
            await index.link_blob(repository, blob, len(data))
        await origin.upload_bytes(repository, Digest.parse(digest), manifest, through=False)
        await index.put_manifest(repository, digest, media_type=media_type, size=len(manifest))
        for tag in tags:
            await index.put_tag(repository, tag, digest)
    return Seeded(digest, manifest, blobs)


async def seed_layout(herd: tuple[str, str], repository: str, tag: str, layout: Path, manifest: str,
                      blobs: list[str], media_type: str) -> None:
    """Record an OCI layout's image (its ``manifest`` digest, the config and layer digests
    ``blobs``) in ``repository`` under ``tag``, uploading the layout's files."""
    def path(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    async with OriginClient(Address.parse(herd[0])) as origin, IndexClient(herd[1]) as index:
        for blob in blobs:
            await origin.upload_file(repository, Digest.parse(blob), path(blob), through=False)
            await index.link_blob(repository, blob, path(blob).stat().st_size)
        await origin.upload_file(repository, Digest.parse(manifest), path(manifest), through=False)
        await index.put_manifest(repository, manifest, media_type=media_type, size=path(manifest).stat().st_size)
        await index.put_tag(repository, tag, manifest)
