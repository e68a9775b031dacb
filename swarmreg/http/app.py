"""The Quart app factory every port uses: blob-sized limits, bounded request bodies,
and errors in the JSON envelope from swarmreg.errors."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import EventWrapper, TrioBody, TrioRequest
from quart_trio.wrappers.response import TrioResponse
from werkzeug.exceptions import HTTPException

from swarmreg.errors import (
    BAD_REQUEST,
    BLOB_UPLOAD_INVALID,
    INTERNAL,
    NOT_FOUND,
    TOO_LARGE,
    UNSUPPORTED,
    SwarmregError,
    internal_error,
    is_storage_full,
    os_error,
)

if TYPE_CHECKING:
    from swarmreg.metrics import Metrics

log = logging.getLogger(__name__)

# The app's config key holding the daemon's Metrics (swarmreg.http.routes.add_metrics_route sets it).
METRICS_KEY = "SWARMREG_METRICS"
CLIENT_GONE = 499

# A request body buffers at most this much before the socket stops being read.
BODY_HIGH_WATER = 8 << 20
# What each buffered chunk costs besides its bytes (the bytes object, its deque slot), counted
# against BODY_HIGH_WATER: a chunked body of 1-byte chunks would otherwise buffer 8 million of them.
CHUNK_OVERHEAD = 64
# A request answered before its body was read keeps its connection only when the rest of the
# body is at most this long and arrives this soon (it is read and dropped); otherwise the answer
# says Connection: close, so the client does not send its next request on a connection that is
# about to close with unread bytes in it.
DRAIN_LIMIT = 1 << 20
DRAIN_TIMEOUT = 1.0


class BoundedBody(TrioBody):
    """A request body that hands over the received chunks as they are and holds at most
    BODY_HIGH_WATER bytes: when it is full the connection's reader waits.

    Quart's own body grows without limit and copies every chunk twice (into a
    bytearray, then out of it), which cost a fifth of the upload time here.
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._drained = EventWrapper()
        self._drained.set()
        self._discarding = False
        self.received = 0  # bytes of the body that have arrived, kept or not

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived."""
        return self._complete.is_set()

    def append(self, data: bytes) -> None:
        if not data or self._must_raise is not None:
            return
        self.received += len(data)
        if self._discarding:
            return
        self._chunks.append(data)
        self._size += len(data) + CHUNK_OVERHEAD
        self._has_data.set()
        if self._size >= BODY_HIGH_WATER:
            self._drained.clear()

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        if not self._chunks and not self._complete.is_set():
            await self._has_data.wait()
        if not self._chunks:
            raise StopAsyncIteration
        data = self._chunks.popleft()
        self._size -= len(data) + CHUNK_OVERHEAD
        if not self._chunks:
            self._has_data.clear()
        if self._size < BODY_HIGH_WATER:
            self._drained.set()
        return data

    def __await__(self) -> Generator[Any, None, bytes]:
        yield from self._complete.wait().__await__()
        if self._must_raise is not None:
            raise self._must_raise
        return b"".join(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0
        self._drained.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def wait_complete(self) -> None:
        await self._complete.wait()

    def discard(self) -> None:
        """Nothing reads this body any more: drop what it holds and whatever still arrives,
        so the connection's reader never waits for room again."""
        self._discarding = True
        self.clear()


class BoundedRequest(TrioRequest):
    body_class = BoundedBody


class PlainResponse(TrioResponse):
    """Bodies without an explicit type are plain text, not Quart's HTML default."""

    default_mimetype = "text/plain"


class BackpressureConnection(TrioASGIHTTPConnection):
    """Reads the next body message only once the handler has drained the buffer, and ends each
    response so that its connection is kept alive or closed, never left hanging.

    hypercorn finishes a request inside the app's last ``send``: it closes the connection when
    the request body has not all arrived, or else starts the keep-alive timer and reads the next
    request. That same ``send`` first tells the app ``http.disconnect``, on which quart-trio
    cancels the app's tasks, the sender included, and the cancellation cut hypercorn's work
    short at its next checkpoint: a connection meant to close stayed open, its reader dropped
    the rest of the body and then waited forever before the next request (which got no
    answer), and a kept-alive connection lost its idle timeout. So the disconnect that arrives
    during the last send does not cancel it. A response sent before the body has all arrived
    (an early error) waits for a short rest of it (_drain), or says ``Connection: close``.
    """

    _finishing = False

    async def handle_messages(self, nursery: trio.Nursery, request: Any, receive: Any) -> None:  # type: ignore[override]
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    request.body.set_complete()
                await request.body.wait_drained()
            elif message["type"] == "http.disconnect":
                break
        if not self._finishing:  # a client gone mid-request: stop the handler
            nursery.cancel_scope.cancel()

    async def handle_request(self, nursery: trio.Nursery, request: Any, send: Any) -> None:  # type: ignore[override]
        # The request middleware: each request is counted once its response ended (or broke off).
        metrics: Metrics | None = self.app.config.get(METRICS_KEY)
        started = trio.current_time()
        status: int | None = None
        sent = 0
        try:
            response = await self.app.handle_request(request)
            status = response.status_code
            if not await _drain(request) and self.scope.get("http_version") in ("1.0", "1.1"):
                response.headers["Connection"] = "close"

            # hypercorn's send returns even when the socket broke during it (the client hung up
            # mid-body); its HTTPStream (the send's owner, hypercorn 0.18) is closed from then on.
            stream = getattr(send, "__self__", None)
            closing = _closes(request, response)

            async def finish(message: Any) -> None:
                nonlocal sent
                last = message["type"] == "http.response.body" and not message.get("more_body", False)
                if last:
                    self._finishing = True
                await send(message)
                # A body message counts once it went out: the stream still open after it, or it was
                # the last of a response after which the connection closes anyway.
                if message["type"] == "http.response.body" and (not getattr(stream, "closed", False)
                                                                 or (last and closing)):
                    sent += len(message.get("body", b""))

            if isinstance(response, Response) and response.timeout is not Ellipsis:
                timeout = response.timeout
            else:
                timeout = self.app.config["RESPONSE_TIMEOUT"]
            with trio.move_on_after(float("inf") if timeout is None else timeout):
                await self._send_response(finish, response)
        finally:
            if metrics is not None:
                # The URL rule, never the path: the route label's values stay few.
                rule = request.url_rule.rule if request.url_rule is not None else None
                received = request.body.received if isinstance(request.body, BoundedBody) else 0
                # 499 (nginx's): the client hung up before it was answered, no server error.
                metrics.observe(self.app.name, rule, request.method, CLIENT_GONE if status is None else status,
                                trio.current_time() - started, sent, received)
        nursery.cancel_scope.cancel()


def _closes(request: Any, response: Any) -> bool:
    """Whether the connection closes after this response (HTTP/1.0, or ``Connection: close`` asked
    by either side)."""
    asked = f"{request.headers.get('Connection', '')},{response.headers.get('Connection', '')}".lower()
    return request.http_version == "1.0" or "close" in asked


async def _drain(request: Any) -> bool:
    """Read and drop the rest of a body the handler left, if it is short and comes soon;
    returns whether the whole body has arrived (and the connection can serve another request)."""
    body = request.body
    if not isinstance(body, BoundedBody):
        return True
    body.discard()
    if body.complete:
        return True
    length = request.content_length  # None: chunked, or no body (whose end may not be in yet)
    if length is None or length - body.received <= DRAIN_LIMIT:
        with trio.move_on_after(DRAIN_TIMEOUT):
            await body.wait_complete()
    return body.complete


def error_response(error: SwarmregError, headers: dict[str, str] | None = None) -> Response:
    """The JSON envelope for ``error`` with its registered status."""
    body = json.dumps(error.envelope(), separators=(",", ":"))
    return Response(body, status=error.status, content_type="application/json",
                    headers={**error.headers, **(headers or {})})


# Errors raised by Quart/werkzeug itself (routing, protocol), mapped onto our codes.
_HTTP_STATUS_CODES = {404: NOT_FOUND, 405: UNSUPPORTED, 413: TOO_LARGE}


def create_base_app(name: str) -> QuartTrio:
    """A QuartTrio app configured for blobs, with the error envelope on every failure."""
    app = QuartTrio(name)
    app.asgi_http_class = BackpressureConnection
    app.request_class = BoundedRequest
    app.response_class = PlainResponse
    # Quart's defaults suit web forms: 16 MiB bodies, 60 s per body and per response.
    # Blob routes stream, enforce their own size limits and idle timeouts.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["RESPONSE_TIMEOUT"] = None
    app.url_map.strict_slashes = False

    @app.errorhandler(SwarmregError)
    async def _swarmreg_error(error: SwarmregError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_STATUS_CODES.get(status, BAD_REQUEST if status < 500 else INTERNAL)
        message = None if status in _HTTP_STATUS_CODES else (error.description or error.name)
        return error_response(SwarmregError(code, message))

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        if is_storage_full(error):  # an operator's problem, not a bug: no traceback in the log
            log.error("%s: disk full while serving %s", name, request.path[:200])
            return error_response(os_error(error, "storage error"))
        return error_response(internal_error(log, f"unhandled error in {name}"))

    return app


async def body_chunks(body: AsyncIterable[bytes], idle_timeout: float) -> AsyncIterator[bytes]:
    """Yield a request body's chunks; a body that stalls for ``idle_timeout`` raises."""
    iterator = body.__aiter__()
    while True:
        chunk = None
        with trio.move_on_after(idle_timeout):
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
        if chunk is None:
            raise SwarmregError(BLOB_UPLOAD_INVALID, f"request body stalled for {idle_timeout:g} s")
        yield chunk
