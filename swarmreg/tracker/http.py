"""Plain HTTP on the tracker's websocket port: ``GET /metrics`` for Prometheus, ``/stats`` and the
``/status`` page as on every HTTP port (and 400 for a plain request to the websocket's paths, 404
elsewhere).

trio-websocket answers anything but a websocket handshake with a bare 400, so the server here
reads each connection's request head first: a handshake goes on to trio-websocket (its bytes fed
to the connection's protocol state before the reader starts, so the stream stays the socket or
TLS stream the tracker reads addresses and certificates from); any other request is answered
here, in the errors' JSON envelope, and the connection closed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from trio_websocket import WebSocketConnection, WebSocketServer
from wsproto import ConnectionType, WSConnection
from wsproto.utilities import RemoteProtocolError

from swarmreg.errors import BAD_REQUEST, NOT_FOUND, UNSUPPORTED, SwarmregError
from swarmreg.http.paths import METRICS, STATS, STATUS
from swarmreg.http.status_page import load_page, page, status_figures
from swarmreg.tracker.wire import HEALTH_PATH, PATH

if TYPE_CHECKING:
    from swarmreg.node import Node

# A request head longer than this is refused (a websocket handshake is a few hundred bytes).
MAX_HEAD = 16 << 10
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def read_head(stream: trio.abc.Stream) -> bytes | None:
    """The bytes up to the end of the request head (and any that came with them); None when the
    client closed first or sent a head past MAX_HEAD."""
    data = b""
    while b"\r\n\r\n" not in data[:MAX_HEAD + 4]:  # the head's end within MAX_HEAD, its CRLFs aside
        if len(data) > MAX_HEAD:
            return None
        try:
            chunk = await stream.receive_some(MAX_HEAD)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def is_handshake(head: bytes) -> bool:
    """Whether the request asks for a websocket (``Upgrade: websocket``)."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


async def answer(stream: trio.abc.Stream, head: bytes, node: Node, port_role: str, template: str) -> None:
    """Answer a plain HTTP request: GET or HEAD of /metrics, /stats or /status, else an error."""
    started = trio.current_time()
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    method, target = (request_line[0], request_line[1]) if len(request_line) == 3 else ("", "")
    path, _, query = target.partition("?")
    route: str | None = path.rstrip("/") if path.rstrip("/") in (METRICS, STATS, STATUS) else None
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if not target.startswith("/"):
        status, body = _error(SwarmregError(BAD_REQUEST, "not an HTTP request"))
    elif path in (PATH, HEALTH_PATH):
        status, body = _error(SwarmregError(BAD_REQUEST, f"{path} is a websocket: upgrade to it"))
    elif route is None:
        status, body = _error(SwarmregError(NOT_FOUND, "this port serves the announce channel "
                                                       "(a websocket), /metrics, /stats and /status"))
    elif method not in ("GET", "HEAD"):
        status, body = _error(SwarmregError(UNSUPPORTED))
    elif route == METRICS:
        status, body, headers = 200, node.metrics.render(), {"Content-Type": CONTENT_TYPE_LATEST}
    elif route == STATS:
        asked = parse_qs(query).get("status", [""])[-1] in ("1", "true")
        figures = {"status": await status_figures(node)} if asked else {}
        status, body = 200, json.dumps(figures, separators=(",", ":")).encode()
    else:
        text, headers = page(template)
        status, body = 200, text.encode()
    head_lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    response = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n{head_lines}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sent = 0 if method == "HEAD" else len(body)
    try:
        await stream.send_all(response + (body if sent else b""))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        sent = 0
    node.metrics.observe(port_role, route, method, status, trio.current_time() - started, sent, 0)


def _error(error: SwarmregError) -> tuple[int, bytes]:
    return error.status, json.dumps(error.envelope(), separators=(",", ":")).encode()


class HttpAndWebSocketServer(WebSocketServer):
    """A WebSocketServer that answers plain HTTP requests on the same port (``answer``)."""

    def __init__(self, *args: Any, node: Node, port_role: str = "tracker", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node = node
        self.port_role = port_role
        self.template = load_page()

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        # trio-websocket 0.12's own, but for the head read first (the tracker pins the version).
        with trio.move_on_after(self._connect_timeout):
            head = await read_head(stream)
        if head is None or not is_handshake(head):
            with trio.move_on_after(self._disconnect_timeout):
                if head is not None:
                    await answer(stream, head, self.node, self.port_role, self.template)
                await stream.aclose()
            return
        async with trio.open_nursery() as nursery:
            connection = WebSocketConnection(stream, WSConnection(ConnectionType.SERVER),
                                             message_queue_size=self._message_queue_size,
                                             max_message_size=self._max_message_size,
                                             receive_buffer_size=self._receive_buffer_size)
            try:
                connection._wsproto.receive_data(head)  # the reader handles its events before it reads
            except RemoteProtocolError:
                await stream.aclose()
                return
            nursery.start_soon(connection._reader_task)
            with trio.move_on_after(self._connect_timeout) as connect_scope:
                request = await connection._get_request()
            if connect_scope.cancelled_caught:
                nursery.cancel_scope.cancel()
                await stream.aclose()
                return
            try:
                await self._handler(request)
            finally:
                with trio.move_on_after(self._disconnect_timeout):
                    await connection.aclose()
