"""Every real client against docker-registry (CNCF distribution 2.8), the stand-in registry.

These prove the fixtures and helpers; the proxy's client tests will use them with its own URL.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from .clients import Containerd, Docker, Podman, Skopeo
from .layout import (
    INDEX,
    Image,
    blob_digests,
    build_oci_index_layout,
    build_oci_layout,
    read_layout,
    write_docker_archive,
)
from .tools import hostport

MiB = 1 << 20


def registry_digest(registry: str, repo: str, ref: str, accept: str) -> str:
    """The Docker-Content-Digest the registry answers for a manifest HEAD."""
    response = httpx.head(f"{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    assert response.status_code == 200, response
    return response.headers["Docker-Content-Digest"]


async def pushed_image(skopeo: Skopeo, registry: str, tmp_path: Path, repo_tag: str,
                       layers: list[int | bytes]) -> Image:
    image = await trio.to_thread.run_sync(build_oci_layout, tmp_path / "layout", layers)
    await skopeo.push(tmp_path / "layout", registry, repo_tag)
    return image


@pytest.mark.slow
async def test_skopeo_round_trip_keeps_every_digest(skopeo: Skopeo, reference_registry: str,
                                                    tmp_path: Path) -> None:
    image = await pushed_image(skopeo, reference_registry, tmp_path, "test/big:latest",
                               [64 * MiB, 4096])
    assert image.layers[0].size > 64 * MiB
    manifest = await skopeo.inspect(reference_registry, "test/big:latest", raw=True)
    assert [layer["digest"] for layer in manifest["layers"]] == [d.digest for d in image.layers]
    assert registry_digest(reference_registry, "test/big", "latest",
                           image.manifest.media_type) == image.manifest.digest

    out = tmp_path / "pulled"
    await skopeo.pull(reference_registry, "test/big:latest", out)
    assert read_layout(out)["manifests"][0]["digest"] == image.manifest.digest
    assert blob_digests(out) == set(image.blobs)

    as_dir = tmp_path / "dir"
    await skopeo.pull(reference_registry, "test/big:latest", as_dir, fmt="dir")
    assert {p.name for p in as_dir.iterdir()} >= {d.digest.removeprefix("sha256:")
                                                   for d in image.layers}


async def test_skopeo_blob_info_cache_is_private(skopeo: Skopeo, reference_registry: str,
                                                 tmp_path: Path) -> None:
    build_oci_layout(tmp_path / "layout", [1024])
    result = await skopeo("--debug", "copy", "--dest-tls-verify=false",
                          f"oci:{tmp_path / 'layout'}:latest",
                          f"docker://{hostport(reference_registry)}/test/cache:latest")
    assert f"Using blob info cache at {skopeo.cache_file.parent}" in result.stderr
    assert skopeo.cache_file.is_file()


@pytest.mark.slow
async def test_docker_push_then_pull(docker: Docker, reference_registry: str,
                                     tmp_path: Path) -> None:
    image = build_oci_layout(tmp_path / "layout", [2 * MiB, b"docker"])
    archive = write_docker_archive(tmp_path / "layout", image, tmp_path / "image.tar",
                                   "swarmreg-test/loaded:latest")
    await docker.load(archive)
    assert await docker.image_id("swarmreg-test/loaded:latest") == image.config.digest

    ref = f"{hostport(reference_registry)}/test/docker:latest"
    await docker("tag", "swarmreg-test/loaded:latest", ref)
    await docker("push", ref)
    pushed = registry_digest(reference_registry, "test/docker", "latest",
                             "application/vnd.docker.distribution.manifest.v2+json")

    await docker("rmi", ref, "swarmreg-test/loaded:latest")
    await docker("pull", ref)
    assert await docker.image_id(ref) == image.config.digest
    assert await docker.repo_digests(ref) == [f"{hostport(reference_registry)}/test/docker@{pushed}"]


@pytest.mark.slow
async def test_docker_pulls_an_oci_image(docker: Docker, skopeo: Skopeo, reference_registry: str,
                                         tmp_path: Path) -> None:
    image = await pushed_image(skopeo, reference_registry, tmp_path, "test/oci:v1", [MiB, 512])
    ref = f"{hostport(reference_registry)}/test/oci:v1"
    await docker("pull", ref)
    assert await docker.image_id(ref) == image.config.digest
    assert await docker.repo_digests(ref) == [
        f"{hostport(reference_registry)}/test/oci@{image.manifest.digest}"]


@pytest.mark.slow
async def test_podman_pull(podman: Podman, skopeo: Skopeo, reference_registry: str,
                           tmp_path: Path) -> None:
    image = await pushed_image(skopeo, reference_registry, tmp_path, "test/podman:latest",
                               [4 * MiB, 100])
    ref = f"{hostport(reference_registry)}/test/podman:latest"
    await podman.pull(ref)
    assert await podman.image_digest(ref) == image.manifest.digest
    image_id = (await podman("image", "inspect", "--format", "{{.Id}}", ref)).stdout.strip()
    assert "sha256:" + image_id == image.config.digest


@pytest.mark.slow
async def test_ctr_pull(ctr: Containerd, skopeo: Skopeo, reference_registry: str,
                        tmp_path: Path) -> None:
    image = await pushed_image(skopeo, reference_registry, tmp_path, "test/ctr:latest",
                               [4 * MiB, 100])
    ref = f"{hostport(reference_registry)}/test/ctr:latest"
    await ctr.pull(ref)
    assert await ctr.image_target(ref) == image.manifest.digest
    assert await content_digests(ctr) == set(image.blobs)


async def content_digests(ctr: Containerd) -> set[str]:
    """Every blob in containerd's content store."""
    lines = (await ctr("content", "ls", "--quiet")).stdout.split()
    return set(lines)


@pytest.mark.slow
async def test_multi_arch_index_each_client_picks_its_platform(
        skopeo: Skopeo, podman: Podman, ctr: Containerd, reference_registry: str,
        tmp_path: Path) -> None:
    multi = build_oci_index_layout(tmp_path / "layout")
    amd64, arm64 = multi.images["linux/amd64"], multi.images["linux/arm64"]
    await skopeo.push(tmp_path / "layout", reference_registry, "test/multi:latest", all_images=True)
    index = await skopeo.inspect(reference_registry, "test/multi:latest", raw=True)
    assert index["mediaType"] == INDEX
    assert [m["digest"] for m in index["manifests"]] == [amd64.manifest.digest,
                                                         arm64.manifest.digest]
    assert registry_digest(reference_registry, "test/multi", "latest", INDEX) == multi.index.digest

    for arch, image in (("amd64", amd64), ("arm64", arm64)):
        out = tmp_path / f"skopeo-{arch}"
        await skopeo.pull(reference_registry, "test/multi:latest", out, arch=arch)
        assert read_layout(out)["manifests"][0]["digest"] == image.manifest.digest
        assert blob_digests(out) == set(image.blobs)

    ref = f"{hostport(reference_registry)}/test/multi:latest"
    await podman.pull(ref, arch="arm64")
    image_id = (await podman("image", "inspect", "--format", "{{.Id}}", ref)).stdout.strip()
    assert "sha256:" + image_id == arm64.config.digest

    await ctr.pull(ref, platform="linux/arm64")
    assert await ctr.image_target(ref) == multi.index.digest
    content = await content_digests(ctr)
    assert set(arm64.blobs) | {multi.index.digest} <= content
    assert not {d.digest for d in amd64.layers} & content
