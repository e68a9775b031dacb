"""The fixed content the conformance sequence pushes: blobs and manifests with known digests.

Everything is generated from fixed seeds, so every digest is the same on every run and every
target; anything else that looks like a digest in a response is masked by the normalizer.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import cached_property
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"

# What a client that understands every manifest type sends.
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
MANIFEST_LIMIT = 4 * 1024 * 1024  # the size registries SHOULD accept at least (spec: Pushing manifests)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest512(data: bytes) -> str:
    """A sha512 digest (image-spec registers sha512; the distribution spec lets a client choose it)."""
    return "sha512:" + hashlib.sha512(data).hexdigest()


def encode(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def random_blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest(data), "size": len(data), **extra}


def descriptor512(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest512(data), "size": len(data), **extra}


def image_index(*manifests: dict[str, Any]) -> dict[str, Any]:
    """An OCI image index listing ``manifests``, in the normalized form (sorted by digest)."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": sorted(manifests, key=lambda d: d["digest"])}


class Content:
    """Blobs and manifests of the sequence; each attribute is the exact bytes pushed."""

    # Blobs, each pushed by a different upload method.
    config = encode({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}})          # monolithic POST
    config_arm64 = encode({"architecture": "arm64", "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": []}})    # monolithic POST
    layer_post_put = random_blob(150_000, 1)                                  # POST then PUT
    layer_chunked = random_blob(3 * 65536 + 1000, 2)                          # PATCH x2 + PUT
    layer_streamed = random_blob(2 * 1024 * 1024 + 7, 3)                      # chunked encoding
    empty = b"{}"                                                            # OCI empty blob
    never_pushed = random_blob(1000, 4)                                       # manifest blob unknown
    wrong_digest_data = random_blob(5000, 5)                                  # PUT ?digest= mismatch
    cancelled = random_blob(4000, 6)                                          # DELETE upload
    out_of_order = random_blob(8000, 7)                                       # PATCH gap -> 416
    # Blobs pushed under sha512 digests.
    config_sha512 = encode({"architecture": "amd64", "os": "linux", "variant": "sha512",
                            "rootfs": {"type": "layers", "diff_ids": []}})  # monolithic POST
    layer_sha512_put = random_blob(40_000, 8)                                 # POST then PUT
    layer_sha512_chunked = random_blob(2 * 65536 + 500, 9)                    # PATCH + PUT
    wrong_sha512_data = random_blob(3000, 10)                                 # PUT ?digest= mismatch

    @cached_property
    def oci_amd64(self) -> bytes:
        return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": descriptor(OCI_CONFIG, self.config),
                       "layers": [descriptor(OCI_LAYER, self.layer_streamed)]})

    @cached_property
    def oci_arm64(self) -> bytes:
        return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": descriptor(OCI_CONFIG, self.config_arm64),
                       "layers": [descriptor(OCI_LAYER, self.layer_chunked)]})

    @cached_property
    def docker_v2(self) -> bytes:
        return encode({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": descriptor(DOCKER_CONFIG, self.config),
                       "layers": [descriptor(DOCKER_LAYER, self.layer_post_put)]})

    @cached_property
    def index(self) -> bytes:
        return encode({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            descriptor(OCI_MANIFEST, self.oci_amd64, platform={"architecture": "amd64", "os": "linux"}),
            descriptor(OCI_MANIFEST, self.oci_arm64, platform={"architecture": "arm64", "os": "linux"}),
        ]})

    @cached_property
    def oci_sha512(self) -> bytes:
        """An OCI image manifest whose config and layers are named by sha512 digests."""
        return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": descriptor512(OCI_CONFIG, self.config_sha512),
                       "layers": [descriptor512(OCI_LAYER, self.layer_sha512_put),
                                  descriptor512(OCI_LAYER, self.layer_sha512_chunked)]})

    def artifact(self, artifact_type: str, subject: bytes, note: str) -> bytes:
        """An OCI 1.1 artifact manifest (empty config and layer) whose subject is ``subject``."""
        return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                       "config": descriptor(OCI_EMPTY, self.empty),
                       "layers": [descriptor(OCI_EMPTY, self.empty)],
                       "subject": descriptor(OCI_MANIFEST, subject),
                       "annotations": {"org.example.note": note}})

    @cached_property
    def sbom(self) -> bytes:
        return self.artifact(SBOM, self.oci_amd64, "sbom")

    @cached_property
    def signature(self) -> bytes:
        return self.artifact(SIGNATURE, self.oci_amd64, "signature")

    def referrer(self, artifact: bytes, artifact_type: str, note: str) -> dict[str, Any]:
        """The descriptor the referrers API must list for an ``artifact`` manifest (spec: with its
        artifactType and its annotations)."""
        return descriptor(OCI_MANIFEST, artifact, artifactType=artifact_type,
                          annotations={"org.example.note": note})

    @cached_property
    def missing_blob(self) -> bytes:
        return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": descriptor(OCI_CONFIG, self.config),
                       "layers": [descriptor(OCI_LAYER, self.never_pushed)]})

    def padded(self, total: int) -> bytes:
        """A valid OCI manifest of exactly ``total`` bytes (padding in an annotation)."""
        def build(pad: int) -> bytes:
            return encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descriptor(OCI_CONFIG, self.config),
                           "layers": [descriptor(OCI_LAYER, self.layer_streamed)],
                           "annotations": {"org.example.padding": "x" * pad}})
        body = build(total - len(build(0)))
        assert len(body) == total
        return body

    @cached_property
    def at_limit(self) -> bytes:
        return self.padded(MANIFEST_LIMIT)

    @cached_property
    def over_limit(self) -> bytes:
        return self.padded(MANIFEST_LIMIT + 1024)

    def known_digests(self) -> set[str]:
        """Every digest the sequence can legitimately see in a response."""
        names = ["config", "config_arm64", "layer_post_put", "layer_chunked", "layer_streamed",
                 "empty", "never_pushed", "wrong_digest_data", "cancelled", "out_of_order",
                 "oci_amd64", "oci_arm64", "docker_v2", "index", "sbom", "signature",
                 "missing_blob", "at_limit", "over_limit"]
        sha512 = ["config_sha512", "layer_sha512_put", "layer_sha512_chunked", "wrong_sha512_data",
                  "oci_sha512"]
        return ({digest(getattr(self, name)) for name in names + sha512}
                | {digest512(getattr(self, name)) for name in sha512})
