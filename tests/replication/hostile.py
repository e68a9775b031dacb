"""A hostile remote cluster: a real HTTP/1.1 server (trio and h11, as tests.upstream.lying's) that
answers a replicator's pushes with errors, nothing, a trickle, or bodies far too large."""

from __future__ import annotations

import json

import h11
import trio

from tests.upstream.lying import LyingUpstream

# The error body of mode "huge": far more than a client should ever read of it.
HUGE = 256 << 20


class HostileRemote(LyingUpstream):
    """A remote's registry port on 127.0.0.1:0 (``port`` once served) that answers as ``mode`` says:

    - ``errors``: ``/v2/`` is 200, every other request 500 with an error envelope;
    - ``hang``: every request is read and never answered;
    - ``trickle``: every answer's head comes a byte every half second;
    - ``huge``: a push goes as far as its manifest PUT, answered 400 with a HUGE body (``sent``
      counts what went out before the client hung up);
    - ``token-flood``: every request wants a Bearer token, whose realm answers with 1 MiB.
    """

    def __init__(self, mode: str) -> None:
        super().__init__(b"", mode)

    async def _answer(self, connection: h11.Connection, stream: trio.SocketStream, request: h11.Request) -> bool:
        method, target = request.method.decode(), request.target.decode()
        if self.mode in ("hang", "token-flood"):
            return await super()._answer(connection, stream, request)
        self.requests.append((method, target))

        async def send(*events: h11.Event) -> None:
            for event in events:
                await stream.send_all(connection.send(event) or b"")

        def answer(status: int, length: int, *extra: tuple[str, str]) -> h11.Response:
            return h11.Response(status_code=status, headers=[("Content-Length", str(length)),
                                                             ("Content-Type", "application/json"), *extra])

        if self.mode == "trickle":
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.5)
            return False
        if target == "/v2/":
            await send(answer(200, 2), h11.Data(data=b"{}"), h11.EndOfMessage())
            return True
        if self.mode == "errors":
            error = json.dumps({"errors": [{"code": "UNKNOWN", "message": "the remote is broken"}]}).encode()
            await send(answer(500, len(error)), h11.Data(data=error), h11.EndOfMessage())
            return True
        # huge
        if method == "HEAD":
            await send(answer(404, 0), h11.EndOfMessage())
        elif method == "POST":
            await send(answer(202, 0, ("Location", target + "session")), h11.EndOfMessage())
        elif method == "PUT" and "/manifests/" not in target:
            await send(answer(201, 0), h11.EndOfMessage())
        else:
            await send(answer(400, HUGE))
            chunk = b"x" * (64 << 10)
            while self.sent < HUGE:
                await send(h11.Data(data=chunk))
                self.sent += len(chunk)
            await send(h11.EndOfMessage())
        return True


class SlowRelay:
    """A TCP relay on 127.0.0.1:0 (``port`` once served) to ``target``, holding every chunk
    ``delay`` seconds each way: a remote that is slow, but answers."""

    def __init__(self, target: int, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(1 << 16):
                await trio.sleep(self.delay)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
