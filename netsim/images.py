"""The load test's images: random layers, a config naming them, and the manifest's bytes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

KiB, MiB = 1 << 10, 1 << 20


@attrs.frozen
class Blob:
    """A blob of an image: its digest, size, media type, and where its bytes are (file or memory)."""

    digest: str
    size: int
    media_type: str
    path: Path | None = None
    data: bytes | None = None

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def pieces(self, size: int) -> Iterator[bytes]:
        """The blob's bytes in pieces of ``size`` (read from its file one at a time)."""
        if self.data is not None:
            yield from (self.data[i:i + size] for i in range(0, len(self.data), size))
            return
        assert self.path is not None
        with open(self.path, "rb") as file:
            while piece := file.read(size):
                yield piece


@attrs.frozen
class Image:
    """A pushed image: repository, tag, the manifest's digest and the blobs it names."""

    repository: str
    tag: str
    manifest_digest: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


def random_blob(size: int, media_type: str) -> Blob:
    data = os.urandom(size)
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), size, media_type, data=data)


def make_blob(path: Path, size: int) -> str:
    """A random file of ``size`` bytes, written 4 MiB at a time; returns its digest."""
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        left = size
        while left:
            piece = os.urandom(min(4 * MiB, left))
            hasher.update(piece)
            file.write(piece)
            left -= len(piece)
    return "sha256:" + hasher.hexdigest()


def random_file(path: Path, size: int, media_type: str) -> Blob:
    """A random layer of ``size`` bytes written to ``path``."""
    return Blob(make_blob(path, size), size, media_type, path=path)


def config_blob(layers: tuple[Blob, ...], media_type: str) -> Blob:
    """An image config naming the layers (their digests stand in for the uncompressed diff ids)."""
    data = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]}}).encode()
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data=data)


def manifest_bytes(config: Blob, layers: tuple[Blob, ...], media_type: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": config.descriptor(),
                       "layers": [layer.descriptor() for layer in layers]}, indent=3).encode()


def layer_sizes(count: int, smallest: int, largest: int) -> list[int]:
    """``count`` sizes spread geometrically from ``smallest`` to ``largest`` (1 KiB .. 32 MiB by default)."""
    if count == 1:
        return [largest]
    ratio = (largest / smallest) ** (1 / (count - 1))
    return [round(smallest * ratio ** i) for i in range(count)]


def make_image(work: Path, sizes: list[int], layer_type: str, config_type: str) -> tuple[Blob, tuple[Blob, ...]]:
    """An image's config and layers of ``sizes``; the layers are files in ``work``."""
    layers = tuple(random_file(work / f"layer{i}", size, layer_type) for i, size in enumerate(sizes))
    return config_blob(layers, config_type), layers


def size_label(size: int) -> str:
    """A blob size as the report and the request kinds name it: "512 KiB", "2 MiB"."""
    return f"{size / MiB:.3g} MiB" if size >= MiB else f"{size / KiB:.3g} KiB"
