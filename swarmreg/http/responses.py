"""Responses for blob content: full or ranged, HEAD or GET, with the registry's headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.http.app import error_response
from swarmreg.http.body import RangedBody
from swarmreg.http.ranges import ByteRange, parse_range_header


def _plan(digest: Digest, size: int, range_header: str | None) -> tuple[ByteRange | None, dict[str, str]]:
    """The range to send (None: all of it) and the headers; raises RANGE_INVALID with its 416 headers."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
    }
    wanted = parse_range_header(range_header, size)
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range(size)
    headers["Content-Length"] = str(size if wanted is None else wanted.length)
    return wanted, headers


def _respond(body: Any, wanted: ByteRange | None, headers: dict[str, str]) -> Response:
    response = Response(body if body is not None else b"", status=200 if wanted is None else 206, headers=headers)
    response.headers["Content-Length"] = headers["Content-Length"]  # Quart set 0 for a HEAD's empty body
    return response


def _unsatisfiable(error: SwarmregError, size: int) -> Response:
    return error_response(error, headers={"Content-Range": f"bytes */{size}"})


def blob_response(digest: Digest, size: int, body: RangedBody | None, range_header: str | None) -> Response:
    """200 (or 206 for a satisfiable Range) streaming an already open ``body``; a HEAD passes None.

    An unsatisfiable range gives 416 with ``Content-Range: bytes */size`` and closes ``body``.
    """
    try:
        wanted, headers = _plan(digest, size, range_header)
    except SwarmregError as error:
        if body is not None:
            body.close()
        return _unsatisfiable(error, size)
    if wanted is not None and body is not None:
        body.start, body.end = wanted.start, wanted.end
    return _respond(body, wanted, headers)


async def opened_blob_response(digest: Digest, size: int, range_header: str | None,
                               open_range: Callable[[int, int], Awaitable[Any]] | None) -> Response:
    """Like blob_response, for a source opened for the exact bytes [start, end) it must send.

    ``open_range`` is None for a HEAD.
    """
    try:
        wanted, headers = _plan(digest, size, range_header)
    except SwarmregError as error:
        return _unsatisfiable(error, size)
    body = None
    if open_range is not None:
        body = await open_range(*((0, size) if wanted is None else (wanted.start, wanted.end)))
    return _respond(body, wanted, headers)
