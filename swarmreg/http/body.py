"""The one Quart adaptation of a framework-free body (``swarmreg.store.files.Body``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart.wrappers.response import ResponseBody

from swarmreg.store.files import Body


class StreamedBody(ResponseBody):
    """Quart's response body for a ``Body``: iterated by the server, closed when the response ends."""

    def __init__(self, body: Body) -> None:
        self.body = body

    async def __aenter__(self) -> StreamedBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.body.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.body.__aiter__()
