"""The responses every port builds: JSON documents, answers without content, and blob content
(full or ranged, HEAD or GET, with the registry's headers)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.http.app import error_response
from swarmreg.http.body import StreamedBody
from swarmreg.http.ranges import parse_range_header
from swarmreg.store.files import Body


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> Response:
    """``value`` as a compact JSON document."""
    return Response(json.dumps(value, separators=(",", ":")), status=status, content_type=content_type,
                    headers=headers)


def empty_response(status: int, headers: dict[str, str] | None = None) -> Response:
    """An answer without content, and so without a Content-Type (Quart would add one)."""
    response = Response(b"", status=status, headers=headers)
    del response.headers["Content-Type"]
    return response


# Opens the bytes [start, end) of a blob for sending.
OpenRange = Callable[[int, int], Awaitable[Body | bytes]]


async def blob_response(digest: Digest, size: int, range_header: str | None,
                        open_range: OpenRange | None) -> Response:
    """200, or 206 for a satisfiable ``Range``, streaming what ``open_range(start, end)`` opens.

    ``open_range`` is None for a HEAD. An unsatisfiable range gives 416 with
    ``Content-Range: bytes */size``, and nothing is opened.
    """
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
    }
    try:
        wanted = parse_range_header(range_header, size)
    except SwarmregError as error:
        return error_response(error, headers={"Content-Range": f"bytes */{size}"})
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range(size)
    headers["Content-Length"] = str(size if wanted is None else wanted.length)
    content: Any = b""
    if open_range is not None:
        start, end = (0, size) if wanted is None else (wanted.start, wanted.end)
        opened = await open_range(start, end) if end > start else b""
        content = opened if isinstance(opened, bytes) else StreamedBody(opened)
    response = Response(content, status=200 if wanted is None else 206, headers=headers)
    response.headers["Content-Length"] = headers["Content-Length"]  # Quart set 0 for a HEAD's empty body
    return response
