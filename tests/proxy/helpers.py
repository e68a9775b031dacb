"""Building images and pushing them through the registry API, for the proxy and agent tests."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator
from typing import Any

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], *, oci: bool = False, **extra: Any) -> bytes:
    """A Docker schema2 (or OCI) image manifest for these blobs, as the exact bytes to push."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": descriptor(OCI_CONFIG if oci else DOCKER_CONFIG, config),
        "layers": [descriptor(OCI_LAYER if oci else DOCKER_LAYER, layer) for layer in layers],
        **extra,
    }
    return json.dumps(manifest, indent=2).encode()


async def push_blob(client: httpx.AsyncClient, repository: str, data: bytes) -> str:
    """A monolithic upload (POST ?digest= with the body); returns the digest."""
    digest = digest_of(data)
    response = await client.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    return digest


async def push_image(client: httpx.AsyncClient, repository: str, tag: str, layers: list[bytes], *,
                     oci: bool = False) -> tuple[str, bytes]:
    """Push config, layers and the manifest under ``tag``; returns (manifest digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [digest_of(layer) for layer in layers]}}).encode()
    for blob in (config, *layers):
        await push_blob(client, repository, blob)
    manifest = image_manifest(config, layers, oci=oci)
    response = await client.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
                                headers={"Content-Type": OCI_MANIFEST if oci else DOCKER_MANIFEST})
    assert response.status_code == 201, response.text
    return response.headers["docker-content-digest"], manifest


class RegistryAuth(httpx.Auth):
    """What docker does with credentials: basic auth, or on a Bearer challenge a token from the
    realm (asked for with the credentials and the challenge's scope), then the request again."""

    requires_response_body = True

    def __init__(self, user: str, password: str) -> None:
        self.basic = httpx.BasicAuth(user, password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield self.basic.auth_flow(request).__next__()
        if response.status_code != 401 or not response.headers.get("WWW-Authenticate", "").startswith("Bearer "):
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', response.headers["WWW-Authenticate"]))
        # A request made here has none of the client's settings: give it the timeouts at least.
        token_request = httpx.Request("GET", params["realm"], params={
            k: v for k, v in params.items() if k in ("service", "scope")},
            extensions={key: request.extensions[key] for key in ("timeout",) if key in request.extensions})
        token_response = yield next(self.basic.auth_flow(token_request))
        token_response.raise_for_status()
        request.headers["Authorization"] = f"Bearer {token_response.json()['token']}"
        yield request
