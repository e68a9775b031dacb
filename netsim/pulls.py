"""One attempt at an agent's pull, as its client makes it: a blob from the agent's blob API, or an
image from its registry API as docker pulls it. Every byte is hashed and checked; a pull cut short
raises Cut (its client would try again), a wrong answer WrongContent (trying again would not mend it)."""

from __future__ import annotations

import hashlib

import httpx

from netsim.images import Image
from netsim.registry_client import WRONG_ANSWERS, Recorder, RequestFailed, pull_image

CHUNK = 4 << 20
LAYER_KIND = "pull:layer "  # pull_image's kind for a layer's GET, by size: "pull:layer 8 MiB"


class Cut(Exception):
    """The pull failed on the way (a connection cut, an error answer): worth another try."""


class WrongContent(Exception):
    """The pull got bytes that do not match their digest."""


async def blob(url: str, digest: str, timeout: float) -> None:
    """GET the blob at ``url``, hashing every byte; the digest must match."""
    hasher = hashlib.sha256()
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            async with client.stream("GET", url) as response:
                response.raise_for_status()
                async for chunk in response.aiter_raw(CHUNK):
                    hasher.update(chunk)
    except (httpx.HTTPError, OSError) as error:
        raise Cut(f"{type(error).__name__}: {error}") from None
    if "sha256:" + hasher.hexdigest() != digest:
        raise WrongContent("content does not match the digest")


async def image(registry: str, image: Image, timeout: float) -> dict[str, float]:
    """``docker pull`` of ``image`` from the registry API at ``registry``: ``GET /v2/``, the manifest
    by tag (HEAD, then GET by digest), the config, then every layer at once (not docker's three:
    the scenario asks for the whole image together), each streamed and checked. Returns each layer
    size's GET seconds (the slowest of that size's layers)."""
    recorder = Recorder()
    async with httpx.AsyncClient(base_url=registry, timeout=timeout) as client:
        try:
            await pull_image(client, recorder, image, "pull", by_size=True, parallel=len(image.layers))
        except RequestFailed as failed:
            detail = recorder.examples[-1]["detail"] if recorder.examples else ""
            raise (WrongContent if str(failed) in WRONG_ANSWERS else Cut)(f"{failed}: {detail}") from None
    return {kind.removeprefix(LAYER_KIND): max(seconds) for kind, seconds in recorder.latencies.items()
            if kind.startswith(LAYER_KIND)}
