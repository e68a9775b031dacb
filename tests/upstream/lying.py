"""A real HTTP/1.1 server (trio and h11) that plays an upstream registry which lies, hangs or crawls."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import h11
import trio

from swarmreg.digest import Digest

Handler = Callable[[h11.Connection, trio.SocketStream, h11.Request], Awaitable[bool]]


class LyingUpstream:
    """A real HTTP/1.1 server on 127.0.0.1:0 (trio and h11) speaking just enough of the Registry
    API for one blob: ``/v2/`` answers 200, HEAD of the blob gives ``announced`` as its size,
    and GET serves it as ``mode`` says:

    - ``wrong``: bytes of the right size that do not match the digest;
    - ``short``: Content-Length of the whole, then half the bytes, then the connection closes;
    - ``sized``: the right bytes, but HEAD announced more of them;
    - ``stall``: the head and a first part of the body, then nothing more, ever;
    - ``hang``: every request is read and never answered;
    - ``slow``: the right bytes, trickled over ``seconds`` (a slow but live upstream);
    - ``token-flood``: every registry request wants a Bearer token, whose realm (``/token``
      here) answers with a 1 MiB body.

    With ``seconds``, ``wrong`` and ``short`` trickle their body over that time too. ``sent``
    counts the body bytes sent by every GET so far, as they go out.
    """

    def __init__(self, data: bytes, mode: str, *, seconds: float = 0.0) -> None:
        self.data = data
        self.seconds = seconds
        self.digest = Digest.of(data)
        self.mode = mode
        self.requests: list[tuple[str, str]] = []
        self.sent = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(connection, stream)
                if not isinstance(event, h11.Request):
                    return
                while not isinstance(await self._next(connection, stream), h11.EndOfMessage):
                    pass
                if not await self._answer(connection, stream, event):
                    return
                connection.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await stream.aclose()

    @staticmethod
    async def _next(connection: h11.Connection, stream: trio.SocketStream) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(await stream.receive_some(65536))

    async def _answer(self, connection: h11.Connection, stream: trio.SocketStream, request: h11.Request) -> bool:
        """Answer ``request``; False when the connection is to end (the lie is told)."""
        method, target = request.method.decode(), request.target.decode()
        self.requests.append((method, target))
        if self.mode == "hang":
            await trio.sleep_forever()

        async def send(*events: h11.Event) -> None:
            for event in events:
                await stream.send_all(connection.send(event) or b"")

        def head(status: int, length: int, content_type: str = "application/octet-stream") -> h11.Response:
            return h11.Response(status_code=status, headers=[
                ("Content-Length", str(length)), ("Content-Type", content_type),
                ("Docker-Distribution-Api-Version", "registry/2.0"), ("Docker-Content-Digest", str(self.digest))])

        if self.mode == "token-flood":
            if target.startswith("/token"):
                flood = b'{"token": "' + b"x" * (1 << 20) + b'"}'
                await send(head(200, len(flood), "application/json"), h11.Data(data=flood), h11.EndOfMessage())
            else:
                await send(h11.Response(status_code=401, headers=[
                    ("Content-Length", "0"), ("Docker-Distribution-Api-Version", "registry/2.0"),
                    ("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{self.port}/token",service="s"')]),
                    h11.EndOfMessage())
            return True
        if target == "/v2/":
            await send(head(200, 2, "application/json"), h11.Data(data=b"{}"), h11.EndOfMessage())
            return True
        if not target.endswith(f"/blobs/{self.digest}"):
            error = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}).encode()
            await send(head(404, len(error), "application/json"), h11.Data(data=error), h11.EndOfMessage())
            return True
        size = len(self.data) + (10 if self.mode == "sized" else 0)
        if method == "HEAD":
            await send(head(200, size), h11.EndOfMessage())
            return True
        async def body(data: bytes) -> None:
            pieces = max(1, int(self.seconds / 0.25))
            step = -(-len(data) // pieces)
            for offset in range(0, len(data), step):
                await send(h11.Data(data=data[offset:offset + step]))
                self.sent += len(data[offset:offset + step])
                if self.seconds:
                    await trio.sleep(self.seconds / pieces)

        if self.mode == "wrong":
            await send(head(200, size))
            await body(b"X" * len(self.data))
            await send(h11.EndOfMessage())
            return True
        if self.mode == "slow":
            await send(head(200, size))
            await body(self.data)
            await send(h11.EndOfMessage())
            return True
        if self.mode == "sized":
            await send(h11.Response(status_code=200, headers=[("Content-Length", str(len(self.data)))]),
                       h11.Data(data=self.data), h11.EndOfMessage())
            return True
        await send(head(200, size))
        await body(self.data[:len(self.data) // 2])
        if self.mode == "stall":
            await trio.sleep_forever()
        return False  # short: the connection closes, the body incomplete
