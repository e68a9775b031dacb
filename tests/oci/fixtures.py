"""Realistic manifests, as registries serve them (exact bytes: digests are over these strings)."""

from __future__ import annotations

import json
from typing import Any


def sha(char: str) -> str:
    """A well-formed sha256 digest made of one repeated hex character."""
    return "sha256:" + char * 64


DOCKER_CONFIG = "sha256:c059bfaa849c4d8e4aecaeb3a10c2d9b3d85f5165c66ad3a4d937758128c4d18"
DOCKER_LAYER_1 = "sha256:59bf1c3509f33515622619af21ed55bbe26d24913cedbca106468a5fb37a50c3"
DOCKER_LAYER_2 = "sha256:8a5e1a1d3f4c2e0c2b1f0a9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b"

# `docker push` of a two-layer image (3-space indent, as the docker engine writes it).
DOCKER_IMAGE = f"""{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1472,
      "digest": "{DOCKER_CONFIG}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2818413,
         "digest": "{DOCKER_LAYER_1}"
      }},
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 93,
         "digest": "{DOCKER_LAYER_2}"
      }}
   ]
}}""".encode()

EMPTY_CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
SBOM_LAYER = sha("5")
SUBJECT = sha("a")

# An SBOM attached to an image (oras attach style): empty config, artifactType, subject.
OCI_ARTIFACT = f"""{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.example.sbom.v1",
  "config": {{
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "{EMPTY_CONFIG}",
    "size": 2,
    "data": "e30="
  }},
  "layers": [
    {{
      "mediaType": "application/spdx+json",
      "digest": "{SBOM_LAYER}",
      "size": 8231,
      "annotations": {{
        "org.opencontainers.image.title": "sbom.spdx.json"
      }}
    }}
  ],
  "subject": {{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "{SUBJECT}",
    "size": 1024
  }},
  "annotations": {{
    "org.opencontainers.image.created": "2024-03-01T12:00:00Z",
    "org.example.sbom.format": "spdx"
  }}
}}""".encode()

OCI_CONFIG = sha("c")
OCI_LAYER = sha("1")

# A plain OCI image (buildx --output type=image,oci-mediatypes=true).
OCI_IMAGE = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": OCI_CONFIG,
               "size": 1203},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": OCI_LAYER,
                "size": 3408729}],
    "annotations": {"org.opencontainers.image.base.name": "docker.io/library/alpine:3.19"},
}, indent=2).encode()

AMD64 = sha("b")
ARM64 = sha("d")

# A two-platform OCI index, as buildx pushes it.
OCI_INDEX = f"""{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{AMD64}",
      "size": 1050,
      "platform": {{
        "architecture": "amd64",
        "os": "linux"
      }}
    }},
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{ARM64}",
      "size": 1051,
      "platform": {{
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8"
      }}
    }}
  ],
  "annotations": {{
    "org.opencontainers.image.ref.name": "1.0"
  }}
}}""".encode()

LIST_AMD64 = sha("e")
LIST_ARMV7 = sha("f")
LIST_WINDOWS = sha("9")

# A Docker Hub manifest list (keys sorted, as the hub serves them).
DOCKER_LIST = f"""{{
   "manifests": [
      {{
         "digest": "{LIST_AMD64}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "amd64",
            "os": "linux"
         }},
         "size": 528
      }},
      {{
         "digest": "{LIST_ARMV7}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "arm",
            "os": "linux",
            "variant": "v7"
         }},
         "size": 528
      }},
      {{
         "digest": "{LIST_WINDOWS}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.17763.5329",
            "os.features": ["win32k"]
         }},
         "size": 1125
      }}
   ],
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "schemaVersion": 2
}}""".encode()


def load(body: bytes) -> dict[str, Any]:
    """The fixture as a dict, to change and re-encode."""
    return json.loads(body)


def dump(document: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(document).encode()
