"""Run the conformance sequence against a registry's base URL and record what it answered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx

from .normalize import normalize_body, normalize_headers
from .steps import Step

STREAM_PIECE = 65536


@attrs.frozen
class Observation:
    """What one step got: the compared fields, and a raw excerpt for humans."""

    step: str
    status: int
    headers: dict[str, str]
    body: Any
    raw: dict[str, Any] = attrs.field(eq=False)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    """An async body: httpx sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(data), STREAM_PIECE):
        yield data[start:start + STREAM_PIECE]


def _raw(response: httpx.Response, body: bytes) -> dict[str, Any]:
    interesting = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("date", "x-content-type-options")}
    return {"headers": interesting, "body": body[:400].decode(errors="replace")}


async def run_step(client: httpx.AsyncClient, step: Step, saved: dict[str, str],
                   known: Collection[str]) -> Observation:
    """Send one step's request (resolving ``$name`` URLs) and record the normalized answer."""
    url: str | httpx.URL = step.url
    if step.saved_url is not None:
        if step.saved_url not in saved:
            return Observation(step.name, 0, {}, {"skipped": f"no upload URL {step.saved_url!r}"}, {})
        url = saved[step.saved_url]
    # Merge into the URL's own query (upload URLs may carry state there); httpx's params= would
    # replace it.
    url = httpx.URL(url).copy_merge_params(dict(step.params)) if step.params else url
    content: Any = _pieces(step.body) if step.stream and step.body is not None else step.body
    request = client.build_request(step.method, url, headers=dict(step.headers), content=content)
    try:
        response = await client.send(request, stream=True)
    except httpx.TransportError as exc:  # no answer at all: record it and go on
        return Observation(step.name, -1, {}, {"transport-error": type(exc).__name__},
                           {"error": str(exc)})
    try:
        raw_body, broken = await response.aread(), None
    except httpx.TransportError as exc:  # a status and headers, then a broken body
        raw_body, broken = b"", type(exc).__name__
    finally:
        await response.aclose()
    variable = step.save or step.saved_url
    location = response.headers.get("location")
    if variable and location and "/blobs/uploads/" in location and response.status_code < 500:
        # Clients always continue an upload at the newest Location it was given (which may be
        # relative); an opening step saves it only when an upload is in progress (202).
        if step.saved_url is not None or response.status_code == 202:
            saved[variable] = str(response.request.url.join(location))
    body: Any = normalize_body(step.method, response.status_code, raw_body, step.content, known)
    if broken:
        body = {"broken-body": broken}
    headers = normalize_headers(step.method, response.status_code, response.headers, body,
                                step.content, str(client.base_url), known)
    return Observation(step.name, response.status_code, headers, body, _raw(response, raw_body))


async def run_sequence(base_url: str, steps: Sequence[Step],
                       known: Collection[str]) -> list[Observation]:
    """Run every step in order against ``base_url``; one observation per step."""
    saved: dict[str, str] = {}
    observations = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120, follow_redirects=True) as client:
        for step in steps:
            observations.append(await run_step(client, step, saved, known))
    return observations


def write_observations(path: Path, observations: Sequence[Observation]) -> None:
    """Save a run as JSON (one object per step) for reading or diffing by hand."""
    path.write_text(json.dumps([o.to_json() for o in observations], indent=1) + "\n")
