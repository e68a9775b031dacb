"""Responses for blob content: full or ranged, HEAD or GET, with the registry's headers."""

from __future__ import annotations

from quart import Response

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.http.app import error_response
from swarmreg.http.body import RangedBody
from swarmreg.http.ranges import parse_range_header


def blob_response(digest: Digest, size: int, body: RangedBody | None, range_header: str | None) -> Response:
    """200 (or 206 for a satisfiable Range) streaming ``body``; a HEAD passes ``body=None``.

    An unsatisfiable range gives 416 with ``Content-Range: bytes */size`` and closes ``body``.
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
        if body is not None:
            body.close()
        return error_response(error, headers={"Content-Range": f"bytes */{size}"})
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = wanted.content_range(size)
        if body is not None:
            body.start, body.end = wanted.start, wanted.end
    length = size if wanted is None else wanted.length
    response = Response(body if body is not None else b"", status=status, headers=headers)
    response.headers["Content-Length"] = str(length)
    return response
