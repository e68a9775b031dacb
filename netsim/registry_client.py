"""A registry client that asks what docker does: pulls (containerd's resolver, layers three at
once by default) and pushes (blob checks, a cross-repository mount, chunked uploads, the manifest), every
request timed, every answer checked, every failure counted with its reason."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from netsim.images import Blob, Image, make_image, manifest_bytes, size_label
from swarmreg.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

MiB = 1 << 20
PIECE = 1 * MiB  # pulls read blobs in pieces this big: a blob is never held whole
# What containerd's resolver (docker pull) accepts for a manifest.
ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"])
PARALLEL_LAYERS = 3  # docker's max-concurrent-downloads
EXAMPLES = 10  # failures kept with their details
# Failures that are wrong answers, not cut connections or refusals: a retry would not mend them.
WRONG_MANIFEST = "wrong manifest digest"
MANIFEST_MISMATCH = "manifest does not match its digest"
CONTENT_MISMATCH = "content does not match the digest"
WRONG_ANSWERS = frozenset({WRONG_MANIFEST, MANIFEST_MISMATCH, CONTENT_MISMATCH})


class RequestFailed(Exception):
    """A request failed and was recorded as such: the iteration it belongs to stops."""


@attrs.define
class Recorder:
    """Every request's latency by kind, and the failures with their reasons."""

    latencies: dict[str, list[float]] = attrs.Factory(dict)
    failed_by_kind: Counter[str] = attrs.Factory(Counter)
    reasons: Counter[str] = attrs.Factory(Counter)
    examples: list[dict[str, Any]] = attrs.Factory(list)
    bytes_pulled: int = 0
    bytes_pushed: int = 0
    pulls: Counter[str] = attrs.Factory(Counter)  # image pulls completed: "main" and "fresh"
    pushes: int = 0
    started: float = attrs.Factory(time.monotonic)

    def ok(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, kind: str, reason: str, detail: str) -> RequestFailed:
        """Count a failed request; returns the exception that stops its iteration."""
        self.failed_by_kind[kind] += 1
        self.reasons[f"{kind}: {reason}"] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"t": round(time.monotonic() - self.started, 3), "kind": kind,
                                  "reason": reason, "detail": detail[:500]})
        return RequestFailed(reason)


async def request(client: httpx.AsyncClient, recorder: Recorder, kind: str, method: str, url: str,
                  expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
    """One timed request whose body is read whole (a small one); any other status fails it."""
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except Exception as error:  # whatever it raised, the request failed
        raise recorder.fail(kind, type(error).__name__, f"{method} {url}: {error!r}") from error
    if response.status_code not in expect:
        raise recorder.fail(kind, f"HTTP {response.status_code}", f"{method} {url}: {response.text[:300]}")
    recorder.ok(kind, time.perf_counter() - started)
    return response


async def get_blob(client: httpx.AsyncClient, recorder: Recorder, kind: str, url: str, blob: Blob) -> None:
    """GET a blob streamed in 1 MiB pieces, hashing as it comes; size and digest must match."""
    started = time.perf_counter()
    hasher, received = hashlib.sha256(), 0
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                await response.aread()
                raise recorder.fail(kind, f"HTTP {response.status_code}", f"GET {url}: {response.text[:300]}")
            async for piece in response.aiter_raw(PIECE):
                hasher.update(piece)
                received += len(piece)
    except RequestFailed:
        raise
    except Exception as error:
        raise recorder.fail(kind, type(error).__name__, f"GET {url} after {received} bytes: {error!r}") from error
    recorder.bytes_pulled += received
    if received != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
        raise recorder.fail(kind, CONTENT_MISMATCH,
                            f"GET {url}: {received} of {blob.size} bytes, sha256:{hasher.hexdigest()}")
    recorder.ok(kind, time.perf_counter() - started)


async def pull_image(client: httpx.AsyncClient, recorder: Recorder, image: Image, prefix: str, *,
                     by_size: bool = False, parallel: int = PARALLEL_LAYERS) -> None:
    """What ``docker pull repo:tag`` asks the registry, every answer checked against ``image``, up to
    ``parallel`` layers at once; with ``by_size`` each layer size's requests are a kind of their own
    (their latencies differ by far)."""
    manifest_url = f"/v2/{image.repository}/manifests"
    await request(client, recorder, f"{prefix}:base", "GET", "/v2/", (200,))
    head = await request(client, recorder, f"{prefix}:manifest-head", "HEAD", f"{manifest_url}/{image.tag}",
                         (200,), headers={"Accept": ACCEPT})
    if head.headers.get("Docker-Content-Digest") != image.manifest_digest:
        raise recorder.fail(f"{prefix}:manifest-head", WRONG_MANIFEST,
                            f"{image.repository}:{image.tag} -> {head.headers.get('Docker-Content-Digest')}, "
                            f"pushed {image.manifest_digest}")
    got = await request(client, recorder, f"{prefix}:manifest", "GET", f"{manifest_url}/{image.manifest_digest}",
                        (200,), headers={"Accept": ACCEPT})
    # The very bytes that were pushed, and so the blobs below, when the digest matches.
    if "sha256:" + hashlib.sha256(got.content).hexdigest() != image.manifest_digest:
        raise recorder.fail(f"{prefix}:manifest", MANIFEST_MISMATCH, manifest_url)
    blobs = f"/v2/{image.repository}/blobs"
    await get_blob(client, recorder, f"{prefix}:config", f"{blobs}/{image.config.digest}", image.config)
    limiter = trio.CapacityLimiter(parallel)

    async def layer(blob: Blob) -> None:
        async with limiter:
            kind = f"{prefix}:layer {size_label(blob.size)}" if by_size else f"{prefix}:layer"
            await get_blob(client, recorder, kind, f"{blobs}/{blob.digest}", blob)

    try:
        async with trio.open_nursery() as nursery:
            for blob in image.layers:
                nursery.start_soon(layer, blob)
    except* RequestFailed as group:  # the first failure stops the pull; the others were cancelled
        raise group.exceptions[0] from None


async def push_blob(client: httpx.AsyncClient, recorder: Recorder, repository: str, blob: Blob,
                    chunk: int) -> None:
    """Docker's upload of one blob: HEAD (absent), POST a session, PATCH chunks in order, PUT ?digest=."""
    blobs = f"/v2/{repository}/blobs"
    await request(client, recorder, "push:blob-head", "HEAD", f"{blobs}/{blob.digest}", (404,))
    started = await request(client, recorder, "push:upload-start", "POST", f"{blobs}/uploads/", (202,))
    location, offset = started.headers.get("Location"), 0
    if not location:
        raise recorder.fail("push:upload-start", "no Location", f"POST {blobs}/uploads/: {started.headers}")
    for piece in blob.pieces(chunk):
        headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}", "Content-Type": "application/octet-stream"}
        patched = await request(client, recorder, "push:upload-chunk", "PATCH", location, (202,),
                                content=piece, headers=headers)
        offset += len(piece)
        if patched.headers.get("Range") != f"0-{offset - 1}":
            raise recorder.fail("push:upload-chunk", "wrong Range after a chunk",
                                f"{location}: {patched.headers.get('Range')}, sent 0-{offset - 1}")
        location = patched.headers.get("Location", location)
    done = await request(client, recorder, "push:upload-finish", "PUT", location, (201,),
                         params={"digest": blob.digest})
    if done.headers.get("Docker-Content-Digest") != blob.digest:
        raise recorder.fail("push:upload-finish", "wrong digest", f"{location}: {done.headers}")
    recorder.bytes_pushed += blob.size


async def mount_blob(client: httpx.AsyncClient, recorder: Recorder, repository: str, blob: Blob,
                     source: str) -> None:
    """Docker's cross-repository mount of a layer the registry has in ``source``."""
    await request(client, recorder, "push:blob-head", "HEAD", f"/v2/{repository}/blobs/{blob.digest}", (404,))
    await request(client, recorder, "push:mount", "POST", f"/v2/{repository}/blobs/uploads/", (201,),
                  params={"mount": blob.digest, "from": source})


async def put_manifest(client: httpx.AsyncClient, recorder: Recorder, repository: str, tag: str,
                       config: Blob, layers: tuple[Blob, ...], media_type: str) -> str:
    """PUT the image manifest under ``tag``; returns its digest (checked against what the proxy says)."""
    data = manifest_bytes(config, layers, media_type)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    put = await request(client, recorder, "push:manifest", "PUT", f"/v2/{repository}/manifests/{tag}", (201,),
                        content=data, headers={"Content-Type": media_type})
    if put.headers.get("Docker-Content-Digest") != digest:
        raise recorder.fail("push:manifest", "wrong digest", f"{repository}:{tag}: {put.headers}")
    return digest


async def push_image(client: httpx.AsyncClient, recorder: Recorder, repository: str, tag: str,
                     config: Blob, layers: tuple[Blob, ...], chunk: int, *, media_type: str = DOCKER_MANIFEST,
                     mounts: tuple[tuple[Blob, str], ...] = ()) -> Image:
    """``docker push``: the API check, mounts, each new blob's upload, then the manifest."""
    await request(client, recorder, "push:base", "GET", "/v2/", (200,))
    mounted = {blob.digest for blob, _ in mounts}
    for blob, source in mounts:
        await mount_blob(client, recorder, repository, blob, source)
    for blob in (*layers, config):
        if blob.digest not in mounted:
            await push_blob(client, recorder, repository, blob, chunk)
    digest = await put_manifest(client, recorder, repository, tag, config, layers, media_type)
    return Image(repository, tag, digest, config, layers)


async def push_new_image(proxy: str, work: Path, sizes: list[int], repository: str, tag: str, *,
                         timeout: float, chunk: int = 8 * MiB) -> Image:
    """An OCI image of random layers of ``sizes`` (files in ``work``) pushed to ``proxy`` as docker
    does; RuntimeError with the failed requests if the push fails."""
    config, layers = await trio.to_thread.run_sync(make_image, work, sizes, OCI_LAYER_GZIP, OCI_CONFIG)
    recorder = Recorder()
    async with httpx.AsyncClient(base_url=proxy, timeout=timeout) as client:
        try:
            return await push_image(client, recorder, repository, tag, config, layers, chunk, media_type=OCI_MANIFEST)
        except RequestFailed:
            raise RuntimeError(f"pushing the image to pull failed: {recorder.examples}") from None
