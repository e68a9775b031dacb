"""Kept-alive connections on the origin and proxy ports: every request on one is answered, also
after errors and answers sent before the request body was read, and an idle one is closed.

The client is h11 over a socket, as docker's and containerd's Go client behave: it writes the
body while it reads the response, reuses the connection unless the response says
``Connection: close``, and (like Go) only then sends the next request.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs
import h11
import trio

from tests.conftest import make_config, start_daemon

DEADLINE = 20  # per request: a request the server never answers fails here, not in the suite timeout
MiB = 1 << 20
UNKNOWN_UID = "00000000-0000-4000-8000-000000000000"
ZERO = "sha256:" + "0" * 64


@attrs.frozen
class Answer:
    status: int
    body: bytes
    reused: bool  # sent on a connection kept alive from an earlier request
    closes: bool  # the response said Connection: close


class KeepAliveClient:
    """One connection at a time to ``address``, kept for the next request unless the server closes it."""

    def __init__(self, address: str) -> None:
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.stream: trio.SocketStream | None = None
        self.connection = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, body: bytes = b"", *, hold_back: int = 0,
                      headers: tuple[tuple[str, str], ...] = ()) -> Answer:
        """Send the request and read its answer; ``hold_back`` bytes of the body go out only after
        the answer (a client still uploading when the server answers), and only if the connection is kept."""
        reused = self.stream is not None
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.connection = h11.Connection(h11.CLIENT)
        stream, connection = self.stream, self.connection
        request = h11.Request(method=method, target=target, headers=[
            ("Host", f"{self.host}:{self.port}"), ("Content-Length", str(len(body))), *headers])
        await stream.send_all(connection.send(request))
        first = body[:len(body) - hold_back]
        response, content, cut = None, bytearray(), False

        async def send_body() -> None:
            nonlocal cut
            try:
                for offset in range(0, len(first), MiB):
                    await stream.send_all(connection.send(h11.Data(data=first[offset:offset + MiB])))
                if not hold_back:
                    await stream.send_all(connection.send(h11.EndOfMessage()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                cut = True  # the server answered and closed: its answer must have said so

        with trio.move_on_after(DEADLINE) as waited:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_body)
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(1 << 16)
                        assert data, f"{method} {target}: the connection closed without an answer (reused: {reused})"
                        connection.receive_data(data)
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        content += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                if connection.their_state is not h11.MUST_CLOSE:
                    if hold_back:  # finish the body, then the connection serves the next request
                        await trio.sleep(0.2)  # the rest comes a moment later, as over a real network
                        await stream.send_all(connection.send(h11.Data(data=body[len(first):])))
                        await stream.send_all(connection.send(h11.EndOfMessage()))
                else:
                    nursery.cancel_scope.cancel()
        assert not waited.cancelled_caught, f"{method} {target}: no answer in {DEADLINE} s (reused: {reused})"
        assert response is not None
        closes = connection.their_state is h11.MUST_CLOSE
        assert closes or not cut, f"{method} {target}: closed while the body was sent, yet no Connection: close"
        if closes:
            await self.aclose()
        else:
            connection.start_next_cycle()
        return Answer(response.status_code, bytes(content), reused, closes)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


def code_of(answer: Answer) -> str:
    return json.loads(answer.body)["errors"][0]["code"]


async def test_every_request_on_a_kept_alive_origin_connection_is_answered(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(tmp_path), ["origin"])
    client = KeepAliveClient(origin.ready["roles"]["origin"]["http"])
    data = b"kept alive" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = f"/namespace/test%2Fkeep/blobs/{digest}"
    unknown_session = f"{blob}/uploads/{UNKNOWN_UID}"
    steps = [  # (method, target, body, hold_back, status)
        ("GET", "/health", b"", 0, 200),
        ("GET", f"/namespace/test%2Fkeep/blobs/{ZERO}", b"", 0, 404),
        ("GET", "/namespace/test%2Fkeep/blobs/sha256:short", b"", 0, 400),
        ("PATCH", unknown_session, b"x" * 1000, 0, 404),           # answered before the body is read
        ("PATCH", unknown_session, b"x" * 1000, 990, 404),         # ... while the client still sends it
        ("PATCH", unknown_session, b"x" * (3 * MiB), 0, 404),      # ... a body too big to drain
        ("PATCH", unknown_session, b"x" * (3 * MiB), 2 * MiB, 404),
        ("POST", f"{blob}/uploads", b"", 0, 200),
        ("GET", f"/namespace/test%2Fkeep/blobs/{ZERO}", b"", 0, 404),
        ("DELETE", "/health", b"", 0, 405),
        ("GET", "/health", b"", 0, 200),
    ]
    answers = []
    for method, target, body, hold_back, status in steps:
        answer = await client.request(method, target, body, hold_back=hold_back,
                                      headers=(("Content-Range", f"0,{len(body)}"),) if body else ())
        assert answer.status == status, (method, target, answer)
        answers.append(answer)
    await client.aclose()
    # The connection was kept wherever the server did not say it closes, and it says so only
    # for the bodies it did not read: the one still being sent and the ones too big to drain.
    assert [answer.closes for answer in answers] == [False, False, False, False, True, True, True, False, False,
                                                      False, False]
    assert all(later.reused for earlier, later in zip(answers, answers[1:], strict=False) if not earlier.closes)


async def test_every_request_on_a_kept_alive_proxy_connection_is_answered(nursery: trio.Nursery,
                                                                           tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path), ["origin", "tracker", "index", "proxy"])
    client = KeepAliveClient(herd.ready["roles"]["proxy"]["http"])
    manifest_type = ("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    steps = [  # (method, target, body, hold_back, headers, status, code)
        ("GET", "/v2/", b"", 0, (), 200, None),
        ("PUT", "/v2/team/app/manifests/1", b"x" * (5 * MiB), 0, (manifest_type,), 413, "MANIFEST_INVALID"),
        ("GET", "/v2/team/app/manifests/1", b"", 0, (), 404, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/team/app/manifests/1", b"{}", 0, (manifest_type,), 400, "MANIFEST_INVALID"),
        ("POST", "/v2/Bad_Name/blobs/uploads/", b"x" * 1000, 0, (), 400, "NAME_INVALID"),
        ("POST", "/v2/Bad_Name/blobs/uploads/", b"x" * 1000, 900, (), 400, "NAME_INVALID"),
        ("POST", f"/v2/Bad_Name/blobs/uploads/?digest={ZERO}", b"x" * (3 * MiB), 0, (), 400, "NAME_INVALID"),
        ("GET", f"/v2/team/app/blobs/{ZERO}", b"", 0, (), 404, "BLOB_UNKNOWN"),
        ("PATCH", f"/v2/team/app/blobs/uploads/{UNKNOWN_UID}", b"x" * 1000, 0, (), 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/", b"", 0, (), 200, None),
    ]
    answers = []
    for method, target, body, hold_back, headers, status, code in steps:
        answer = await client.request(method, target, body, hold_back=hold_back, headers=headers)
        assert (answer.status, code and code_of(answer)) == (status, code), (method, target, answer)
        answers.append(answer)
    await client.aclose()
    assert [answer.closes for answer in answers] == [False, False, False, False, False, True, True, False, False,
                                                      False]
    assert all(later.reused for earlier, later in zip(answers, answers[1:], strict=False) if not earlier.closes)


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(nursery: trio.Nursery,
                                                                                    tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(tmp_path, "http.keep_alive_timeout=1"), ["origin"])
    client = KeepAliveClient(origin.ready["roles"]["origin"]["http"])
    for target in ("/health", f"/namespace/test%2Fkeep/blobs/{ZERO}"):
        answer = await client.request("GET", target)
        assert not answer.closes
        assert client.stream is not None
        with trio.fail_after(DEADLINE):  # about 1 s; before the fix this connection stayed open
            assert await client.stream.receive_some(1024) == b"", "the server closes the idle connection"
        await client.aclose()
