"""The hand-written OCI layouts: deterministic, self-consistent, streamed."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

from .layout import (
    CONFIG,
    INDEX,
    LAYER,
    MANIFEST,
    REF_NAME,
    blob_digests,
    build_oci_index_layout,
    build_oci_layout,
    read_layout,
    write_docker_archive,
)


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def test_layout_is_deterministic_and_consistent(tmp_path: Path) -> None:
    a = build_oci_layout(tmp_path / "a", [300_000, b"hello"], ref="v1")
    b = build_oci_layout(tmp_path / "b", [300_000, b"hello"], ref="v1")
    assert a == b
    assert build_oci_layout(tmp_path / "c", [300_000, b"hello"], seed=1).layers[0] != a.layers[0]

    index = read_layout(tmp_path / "a")
    assert index["manifests"] == [{"mediaType": MANIFEST, "digest": a.manifest.digest,
                                   "size": a.manifest.size, "annotations": {REF_NAME: "v1"}}]
    assert json.loads((tmp_path / "a" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert blob_digests(tmp_path / "a") == set(a.blobs)

    manifest = json.loads(blob(tmp_path / "a", a.manifest.digest))
    assert manifest["config"] == {"mediaType": CONFIG, "digest": a.config.digest,
                                  "size": a.config.size}
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER, LAYER]
    config = json.loads(blob(tmp_path / "a", a.config.digest))
    assert config["rootfs"]["diff_ids"] == list(a.diff_ids)
    for desc, diff_id in zip(a.layers, a.diff_ids, strict=True):
        raw = gzip.decompress(blob(tmp_path / "a", desc.digest))
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
        assert len(blob(tmp_path / "a", desc.digest)) == desc.size


def test_layer_tar_is_normalised(tmp_path: Path) -> None:
    image = build_oci_layout(tmp_path, [b"content"])
    path = tmp_path / "blobs" / "sha256" / image.layers[0].digest.removeprefix("sha256:")
    with tarfile.open(path) as tar:
        [member] = tar.getmembers()
        assert (member.name, member.mtime, member.uid, member.gid, member.uname) == \
            ("layer0.bin", 0, 0, 0, "")
        assert tar.extractfile(member).read() == b"content"


def test_multi_arch_index(tmp_path: Path) -> None:
    multi = build_oci_index_layout(tmp_path)
    assert set(multi.images) == {"linux/amd64", "linux/arm64"}
    amd64, arm64 = multi.images.values()
    assert not set(amd64.layers) & set(arm64.layers)
    index = json.loads(blob(tmp_path, multi.index.digest))
    assert index["mediaType"] == INDEX
    assert [(m["digest"], m["platform"]) for m in index["manifests"]] == [
        (amd64.manifest.digest, {"architecture": "amd64", "os": "linux"}),
        (arm64.manifest.digest, {"architecture": "arm64", "os": "linux"})]
    assert read_layout(tmp_path)["manifests"][0]["digest"] == multi.index.digest
    assert json.loads(blob(tmp_path, arm64.config.digest))["architecture"] == "arm64"


def test_docker_archive(tmp_path: Path) -> None:
    image = build_oci_layout(tmp_path / "layout", [1000, 2000])
    archive = write_docker_archive(tmp_path / "layout", image, tmp_path / "i.tar", "a/b:c")
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert manifest[0]["RepoTags"] == ["a/b:c"]
        config = tar.extractfile(manifest[0]["Config"]).read()
        assert "sha256:" + hashlib.sha256(config).hexdigest() == image.config.digest
        assert len(manifest[0]["Layers"]) == 2
