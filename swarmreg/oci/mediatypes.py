"""Media types of the manifests swarmreg accepts and of the blobs they reference."""

from __future__ import annotations

# Manifests.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# Docker schema1 (signed and unsigned): refused, never parsed.
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Configs.
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# The image spec's empty descriptor (content "{}"), used as config or layer by artifacts.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# Layers.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_MANIFESTS = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_TYPES = IMAGE_MANIFESTS | INDEX_MANIFESTS
OCI_MANIFEST_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX})
SCHEMA1_MANIFESTS = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})

# Layers that may live outside the registry: with ``urls`` the registry need not hold them
# (distribution's schema2 and ocischema manifest handlers skip their presence check).
NONDISTRIBUTABLE_LAYERS = frozenset({
    DOCKER_FOREIGN_LAYER, OCI_LAYER_NONDISTRIBUTABLE, OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
})

# Content-Type values that say nothing about which manifest a body is (clients that send no
# type, or a generic one: curl's form default, HTTP libraries' octet-stream): the body decides.
GENERIC_CONTENT_TYPES = frozenset({
    "application/octet-stream", "application/json", "text/plain",
    "application/x-www-form-urlencoded",
})


def base_media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lowercased, without parameters ("" if none)."""
    if content_type is None:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
