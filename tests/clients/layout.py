"""Write OCI image layouts by hand: deterministic gzip tar layers, config, manifest, index.json.

Layers are streamed into their blob files (random content generated in chunks), so a layer of
several GiB never sits in memory. The same arguments always give the same bytes and digests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20

LayerSpec = int | bytes
"""A layer: ``int`` = one file of that many seeded random bytes, ``bytes`` = one file with them."""


@attrs.frozen
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@attrs.frozen
class Image:
    """The digests of one image written into a layout."""

    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    platform: str  # "os/arch"

    @property
    def blobs(self) -> tuple[str, ...]:
        """Every blob digest of the image, manifest first."""
        return (self.manifest.digest, self.config.digest, *(d.digest for d in self.layers))


@attrs.frozen
class MultiArchImage:
    """The digests of an image index and of its per-platform images."""

    index: Descriptor
    images: Mapping[str, Image]  # platform "os/arch" -> image


class _Hashing:
    """A write-only file object that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO | None) -> None:
        self.target, self.sha, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class _RandomReader:
    """``size`` deterministic random bytes, generated in fixed blocks whatever ``read`` asks for."""

    def __init__(self, size: int, seed: int) -> None:
        self.left, self.rng, self.buffer = size, random.Random(seed), b""

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        while len(self.buffer) < n:
            self.buffer += self.rng.randbytes(CHUNK)
        chunk, self.buffer = self.buffer[:n], self.buffer[n:]
        self.left -= n
        return chunk


def _blob_dir(layout: Path) -> Path:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    return blobs


def write_blob(layout: Path, data: bytes, media_type: str) -> Descriptor:
    """Store ``data`` as a blob of the layout; returns its descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    (_blob_dir(layout) / digest).write_bytes(data)
    return Descriptor(media_type, "sha256:" + digest, len(data))


def canonical_json(document: Any) -> bytes:
    """The deterministic serialisation used for every JSON blob written here."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_layer(layout: Path, spec: LayerSpec, name: str, seed: int) -> tuple[Descriptor, str]:
    """Write one gzip tar layer holding file ``name``; returns (descriptor, diff_id)."""
    size = len(spec) if isinstance(spec, bytes) else spec
    content: Any = _BytesReader(spec) if isinstance(spec, bytes) else _RandomReader(spec, seed)
    blobs = _blob_dir(layout)
    partial = blobs / f".partial-{os.getpid()}-{seed}"
    with open(partial, "wb") as out:
        compressed = _Hashing(out)
        # filename="" and mtime=0 keep the gzip header free of names and times.
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=1) as gz:
            uncompressed = _Hashing(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = CHUNK
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = size, 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, content)
    descriptor = Descriptor(LAYER, compressed.digest, compressed.size)
    partial.rename(blobs / compressed.digest.removeprefix("sha256:"))
    return descriptor, uncompressed.digest


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = bytes(self.data[self.pos:end])
        self.pos += len(chunk)
        return chunk


def write_image(layout: Path, layers: Sequence[LayerSpec], *, platform: str = "linux/amd64",
                seed: int = 0) -> Image:
    """Write the layers, config and manifest of one image into ``layout``'s blobs (no index.json)."""
    os_name, arch = platform.split("/", 1)
    written = [write_layer(layout, spec, f"layer{i}.bin", seed * 1000 + i)
               for i, spec in enumerate(layers)]
    config = {
        "architecture": arch,
        "os": os_name,
        "config": {"Labels": {"swarmreg.test.seed": str(seed)}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in written]},
        "history": [{"created_by": f"swarmreg test layer {i}"} for i in range(len(written))],
    }
    config_desc = write_blob(layout, canonical_json(config), CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_desc.to_json(),
        "layers": [desc.to_json() for desc, _ in written],
    }
    manifest_desc = write_blob(layout, canonical_json(manifest), MANIFEST)
    return Image(manifest_desc, config_desc, tuple(d for d, _ in written),
                 tuple(diff_id for _, diff_id in written), platform)


def write_index_json(layout: Path, top: Descriptor, ref: str) -> None:
    """Write ``index.json`` naming ``top`` as ``ref``, and the ``oci-layout`` marker."""
    entry = {**top.to_json(), "annotations": {REF_NAME: ref}}
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry]}
    (layout / "index.json").write_bytes(canonical_json(index))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))


def build_oci_layout(layout: Path, layers: Sequence[LayerSpec], *, ref: str = "latest",
                     platform: str = "linux/amd64", seed: int = 0) -> Image:
    """Write a one-image OCI layout at ``layout`` (created if needed), tagged ``ref``.

    ``layers`` are sizes (seeded random content) or bytes; ``seed`` varies the random content
    and the config, so two calls with different seeds give unrelated images.
    """
    layout.mkdir(parents=True, exist_ok=True)
    image = write_image(layout, layers, platform=platform, seed=seed)
    write_index_json(layout, image.manifest, ref)
    return image


def build_oci_index_layout(layout: Path, platforms: Mapping[str, Sequence[LayerSpec]] | None = None,
                           *, ref: str = "latest", seed: int = 0) -> MultiArchImage:
    """Write a multi-platform OCI layout: an image index over one image per platform.

    By default two platforms, linux/amd64 and linux/arm64, with different small layers.
    """
    if platforms is None:
        platforms = {"linux/amd64": [4096, 1024], "linux/arm64": [8192, 2048]}
    layout.mkdir(parents=True, exist_ok=True)
    images: dict[str, Image] = {}
    entries = []
    for i, (platform, layers) in enumerate(platforms.items()):
        image = write_image(layout, layers, platform=platform, seed=seed * 100 + i + 1)
        images[platform] = image
        os_name, arch = platform.split("/", 1)
        entries.append({**image.manifest.to_json(), "platform": {"architecture": arch, "os": os_name}})
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
    index_desc = write_blob(layout, canonical_json(index), INDEX)
    write_index_json(layout, index_desc, ref)
    return MultiArchImage(index_desc, images)


def read_layout(layout: Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a layout."""
    return json.loads((layout / "index.json").read_bytes())


def blob_digests(layout: Path) -> set[str]:
    """The digests of every blob stored in a layout, checked against their content."""
    found = set()
    for path in _blob_dir(layout).iterdir():
        if path.name.startswith("."):
            continue
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
        assert sha.hexdigest() == path.name, f"blob {path} does not match its name"
        found.add("sha256:" + path.name)
    return found


def write_docker_archive(layout: Path, image: Image, out: Path, repo_tag: str) -> Path:
    """Write a ``docker load`` tarball of ``image`` (from ``layout``) tagged ``repo_tag``.

    Layers go in still gzipped (``docker load`` decompresses them); blobs are streamed from disk.
    """
    blobs = _blob_dir(layout)
    config_name = image.config.digest.removeprefix("sha256:") + ".json"
    layer_names = [d.digest.removeprefix("sha256:") + "/layer.tar.gz" for d in image.layers]
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(blobs / image.config.digest.removeprefix("sha256:"), arcname=config_name)
        for desc, name in zip(image.layers, layer_names, strict=True):
            tar.add(blobs / desc.digest.removeprefix("sha256:"), arcname=name)
        data = canonical_json(manifest)
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, _BytesReader(data))
    return out
