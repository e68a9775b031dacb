"""Every request on every HTTP port of the daemons is answered, over few kept-alive connections.

A herd (origin, tracker, index, proxy) and an agent run as child processes; on each of their HTTP
ports (origin, index, proxy, the agent's blob API and its registry) a few connections carry a
seeded mix of thousands of requests: good GETs and HEADs, 404s, 400s, 405s, and answers the server
gives before it has read the request body (an oversized manifest, a body for a read-only port, a
bad digest or name with a body, a body far too large, one whose rest comes a moment later, one the
client holds back until the answer, malformed requests).
The tracker's port serves the websocket upgrade and a plain GET of /metrics: every other plain
request there is refused, and its connection must then end (it is not kept alive) rather than
hang. No port has another HTTP listener: /health, /stats and /metrics are routes of the ports above.

The client is a raw HTTP/1.1 one that behaves as Go's (docker, containerd, skopeo): it writes a
body while it reads the answer, then reuses the connection unless the answer said
``Connection: close``. Each answer must come complete (its whole body, as framed) within
REQUEST_TIMEOUT; a connection may only close after an answer that announced it, and only when the
request gave a reason to (a body too long to drain, one the client holds back, a malformed request).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import httpx
import pytest
import trio

from netsim.cluster import QUIET
from swarmreg.http.app import DRAIN_LIMIT
from tests.proxy.helpers import OCI_MANIFEST, push_image

REQUEST_TIMEOUT = 10.0  # per request, from its first byte to the last byte of its answer
CONNECTIONS = 4  # per port, used side by side
REQUESTS = 2000  # per port, split across its connections
TRACKER_REQUESTS = 200  # each on a connection of its own
HOLD_BACK_DELAY = 0.05  # a held-back rest of a body goes out this long after the answer
TRICKLE_DELAY = 0.1  # well within the time the server waits for the rest of a body it drains
MAX_FAILURES = 5  # per connection, and 3 times as many per port: then the port's run stops (each
# failure may have cost a timeout)
KiB, MiB = 1 << 10, 1 << 20
REPO = "test/keep"
ZERO = "sha256:" + "0" * 64
UNKNOWN_UID = "00000000-0000-4000-8000-000000000000"
SMALL = b"s" * 1000
TWO_MIB = b"m" * (2 * MiB)
BIG = b"b" * (12 * MiB)  # refused early: far more than the server drains
MANIFEST_5MIB = b"{" + b" " * (5 * MiB)


@attrs.frozen
class Request:
    """One request of the mix and what its answer must be."""

    kind: str  # names the request in the tallies
    method: str
    target: str
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False  # the body goes with Transfer-Encoding: chunked, as docker's PATCHes
    hold_back: int = 0  # bytes of the body sent only after the answer (if the connection is kept) ...
    trickle: bool = False  # ... or TRICKLE_DELAY after the rest, answered or not (a slow uploader)
    raw: bytes | None = None  # sent as is instead (malformed requests)
    answer: bytes | None = None  # the body the answer must carry
    may_close: bool = False  # the server may (must, for ``raw``) end the connection after answering
    ends: bool = False  # the server ends the connection after answering, announced or not (the tracker)

    def encode(self, host: str) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}", "User-Agent: stress/1.0",
                 *(f"{name}: {value}" for name, value in self.headers)]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def encoded_body(self) -> bytes:
        if not self.chunked:
            return self.body
        pieces = [f"{len(self.body[at:at + 64 * KiB]):x}\r\n".encode() + self.body[at:at + 64 * KiB] + b"\r\n"
                  for at in range(0, len(self.body), 64 * KiB)]
        return b"".join(pieces) + b"0\r\n\r\n"


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closes: bool  # the answer said Connection: close (or was delimited by the close)


class BadExchange(Exception):
    """The connection ended or broke before the answer was complete, or it was misused."""


class RawConnection:
    """One kept-alive connection at a time to ``host:port``, reopened after an announced close."""

    def __init__(self, address: str) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()
        self.opened = 0

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None

    async def _receive(self) -> None:
        assert self.stream is not None
        try:
            data = await self.stream.receive_some(256 * KiB)
        except trio.BrokenResourceError as error:
            raise BadExchange(f"the connection broke: {error.__cause__ or error}") from None
        if not data:
            raise BadExchange("the server closed the connection")
        self.buffer += data

    async def _until(self, marker: bytes, limit: int = 64 * KiB) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise BadExchange("an answer's head or chunk line is absurdly long")
            await self._receive()
        data = bytes(self.buffer[:end])
        del self.buffer[:end + len(marker)]
        return data

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._receive()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def _read_answer(self, method: str) -> Answer:
        while True:
            head = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            version, _, rest = head[0].partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise BadExchange(f"not an HTTP/1 answer: {head[0][:80]!r}")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
            if status >= 200:
                break  # (no request sends Expect: a 1xx is skipped)
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        closes = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
                parts.append(await self._exactly(size))
                if await self._exactly(2) != b"\r\n":
                    raise BadExchange("a chunk of the answer does not end in CRLF")
            while await self._until(b"\r\n"):  # trailers
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self._exactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            closes = True
            while True:
                try:
                    await self._receive()
                except BadExchange:
                    break
            body, self.buffer = bytes(self.buffer), bytearray()
        return Answer(status, headers, body, closes)

    async def _end(self) -> None:
        """Wait for the server to end the connection, with nothing more said."""
        try:
            await self._receive()
        except BadExchange:
            return
        raise BadExchange(f"bytes no request asked for follow the answer: {bytes(self.buffer[:80])!r}")

    async def exchange(self, request: Request) -> Answer:
        """Send ``request`` and read its answer.

        The body goes out while the answer is read, as Go's client does; a kept connection is
        only used again once the whole body has been sent (the held-back rest after the answer).
        """
        reused = self.stream is not None
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = bytearray()
            self.opened += 1
        stream = self.stream
        body = request.encoded_body()
        first = body[:len(body) - request.hold_back]
        cut = False
        answered = trio.Event()  # set once the answer is in and the connection is kept

        async def send(data: bytes) -> None:
            for at in range(0, len(data), MiB):
                await stream.send_all(data[at:at + MiB])

        async def send_request() -> None:
            nonlocal cut
            try:
                await send(request.encode(f"{self.host}:{self.port}") + first)
                if request.trickle:
                    await trio.sleep(TRICKLE_DELAY)
                    await send(body[len(first):])
                elif request.hold_back:
                    await answered.wait()
                    await trio.sleep(HOLD_BACK_DELAY)
                    await send(body[len(first):])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                cut = True  # the server stopped reading: its answer must say it closes

        answer, failure = None, None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_request)
            try:
                answer = await self._read_answer(request.method)
            except BadExchange as error:
                failure = f"{error} (sent on a {'reused' if reused else 'new'} connection)"
                nursery.cancel_scope.cancel()
            else:
                if answer.closes:
                    nursery.cancel_scope.cancel()
                answered.set()
        if answer is None:
            await self.aclose()
            raise BadExchange(failure)
        if request.ends and not answer.closes:
            await self._end()
        if answer.closes or request.ends:
            await self.aclose()
        else:
            if cut:
                raise BadExchange("the server stopped reading the body without announcing Connection: close")
            if self.buffer:
                raise BadExchange(f"bytes no request asked for follow the answer: {bytes(self.buffer[:80])!r}")
        return answer


@attrs.define
class Tally:
    """What happened on one port."""

    requests: int = 0
    statuses: Counter[int] = attrs.field(factory=Counter)
    closes: int = 0  # answers that said Connection: close
    ended: int = 0  # connections the server ended after an answer that did not say so
    connections: int = 0
    failures: list[str] = attrs.field(factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "connections": self.connections, "closes": self.closes,
                "ended without Connection: close": self.ended,
                "statuses": dict(sorted(self.statuses.items())), "failures": len(self.failures),
                "seconds": round(self.seconds, 1)}


def check(request: Request, answer: Answer) -> str | None:
    """What is wrong with ``answer`` to ``request``, if anything."""
    if answer.status != request.status:
        return f"status {answer.status}, not {request.status}: {answer.body[:200]!r}"
    if request.answer is not None and answer.body != request.answer:
        return f"a body of {len(answer.body)} bytes, not the {len(request.answer)} expected"
    if answer.status >= 400 and request.method != "HEAD" and request.raw is None and not request.ends:
        try:
            json.loads(answer.body)["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"an error answer without the JSON envelope: {answer.body[:200]!r}"
    if answer.closes and not (request.may_close or request.ends):
        return "the connection was closed after a request that gave no reason to"
    if request.raw is not None and not (answer.closes or request.ends):
        return "a malformed request's answer did not close the connection"
    return None


async def run_connection(address: str, requests: Sequence[Request], tally: Tally) -> None:
    connection = RawConnection(address)
    failures = 0
    try:
        for request in requests:
            problem = None
            with trio.move_on_after(REQUEST_TIMEOUT) as waited:
                try:
                    answer = await connection.exchange(request)
                except BadExchange as error:
                    problem = str(error)
                else:
                    problem = check(request, answer)
                    tally.statuses[answer.status] += 1
                    tally.closes += answer.closes
                    tally.ended += request.ends and not answer.closes
            if waited.cancelled_caught:
                problem = f"no complete answer in {REQUEST_TIMEOUT:g} s"
            tally.requests += 1
            if problem is not None:
                tally.failures.append(f"{request.kind}: {request.method} {request.target[:80]}: {problem}")
                await connection.aclose()  # start afresh on a new connection
                failures += 1
                if failures >= MAX_FAILURES or len(tally.failures) >= 3 * MAX_FAILURES:
                    return
    finally:
        tally.connections += connection.opened
        await connection.aclose()


async def stress(address: str, mix: Sequence[tuple[int, Request]], seed: int,
                 requests: int = REQUESTS, connections: int = CONNECTIONS) -> Tally:
    """Send ``requests`` drawn from the weighted ``mix`` (seeded) over ``connections`` connections."""
    weights, choices = zip(*mix, strict=True)
    drawn = random.Random(seed).choices(choices, weights, k=requests)
    tally = Tally()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(run_connection, address, drawn[index::connections], tally)
    tally.seconds = trio.current_time() - start
    return tally


@attrs.frozen
class Image:
    """What was pushed for the good requests: a layer, and its manifest under tag v1."""

    layer: bytes
    layer_digest: str
    manifest: bytes
    manifest_digest: str


def malformed() -> list[tuple[int, Request]]:
    """Requests no HTTP/1.1 server can read: each is answered with 400 and the connection closed."""
    return [
        (2, Request("garbage", "GARBAGE", "-", 400, raw=b"GARBAGE\r\n\r\n", may_close=True)),
        (2, Request("bad length", "GET", "/", 400, may_close=True,
                    raw=b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")),
    ]


def origin_mix(image: Image) -> list[tuple[int, Request]]:
    blob = f"/namespace/{REPO.replace('/', '%2F')}/blobs/{image.layer_digest}"
    unknown = f"/namespace/{REPO.replace('/', '%2F')}/blobs/{ZERO}"
    session = f"{unknown}/uploads/{UNKNOWN_UID}"
    return [
        (10, Request("health", "GET", "/health", 200, answer=b"OK\n")),
        (4, Request("stats", "GET", "/stats", 200)),
        (14, Request("blob", "GET", blob, 200, answer=image.layer)),
        (8, Request("blob head", "HEAD", blob, 200)),
        (6, Request("blob range", "GET", blob, 206, headers=(("Range", "bytes=10-99"),), answer=image.layer[10:100])),
        (10, Request("unknown blob", "GET", unknown, 404)),
        (6, Request("bad digest", "GET", f"/namespace/{REPO}/blobs/sha256:short", 400)),
        (6, Request("bad namespace", "HEAD", f"/namespace/-bad/blobs/{ZERO}", 400)),
        (6, Request("unknown path", "GET", "/nothing/here", 404)),
        (6, Request("wrong method", "DELETE", "/health", 405)),
        (4, Request("known blob upload", "POST", f"{blob}/uploads", 409)),
        (8, Request("patch unknown", "PATCH", session, 404, body=SMALL, headers=(("Content-Range", "0-999"),))),
        (4, Request("patch unknown chunked", "PATCH", session, 404, body=SMALL, chunked=True)),
        (4, Request("patch bad digest", "PATCH", session.replace(ZERO, "sha256:short"), 400, body=SMALL)),
        (2, Request("patch 2 MiB", "PATCH", session, 404, body=TWO_MIB, may_close=True)),
        (1, Request("patch 12 MiB", "PATCH", session, 404, body=BIG, may_close=True)),
        (1, Request("patch held back", "PATCH", session, 404, body=SMALL, hold_back=900, may_close=True)),
        (2, Request("patch trickled", "PATCH", session, 404, body=SMALL, hold_back=900, trickle=True)),
        *malformed(),
    ]


def index_mix(image: Image) -> list[tuple[int, Request]]:
    repo = f"/repositories/{REPO}"
    tag_body = json.dumps({"digest": image.manifest_digest}).encode()
    return [
        (10, Request("health", "GET", "/health", 200, answer=b"OK\n")),
        (6, Request("catalog", "GET", "/repositories", 200)),
        (8, Request("tags", "GET", f"{repo}/tags", 200)),
        (10, Request("tag", "GET", f"{repo}/tags/v1", 200)),
        (6, Request("tag head", "HEAD", f"{repo}/tags/v1", 200)),
        (8, Request("manifest record", "GET", f"{repo}/manifests/{image.manifest_digest}", 200)),
        (6, Request("blob link", "HEAD", f"{repo}/blobs/{image.layer_digest}", 200)),
        (4, Request("tag put", "PUT", f"{repo}/tags/v1", 201, body=tag_body)),
        (10, Request("unknown manifest", "GET", f"{repo}/manifests/{ZERO}", 404)),
        (6, Request("unknown tag", "GET", f"{repo}/tags/nope", 404)),
        (6, Request("bad digest", "GET", f"{repo}/blobs/sha256:short", 400)),
        (6, Request("bad name", "GET", "/repositories/Bad_Name/tags", 400)),
        (6, Request("wrong method", "POST", "/health", 405)),
        (6, Request("bad name with body", "PUT", "/repositories/Bad_Name/tags/v1", 400, body=SMALL)),
        (4, Request("not json", "PUT", f"{repo}/tags/v1", 400, body=SMALL)),
        (2, Request("body too large", "PUT", f"{repo}/tags/v2", 413, body=MANIFEST_5MIB, may_close=True)),
        (1, Request("put 12 MiB bad name", "PUT", "/repositories/Bad_Name/tags/v1", 400, body=BIG, may_close=True)),
        (1, Request("put held back", "PUT", "/repositories/Bad_Name/tags/v1", 400, body=SMALL, hold_back=900,
                    may_close=True)),
        (2, Request("put trickled", "PUT", "/repositories/Bad_Name/tags/v1", 400, body=SMALL, hold_back=900,
                    trickle=True)),
        *malformed(),
    ]


def registry_reads(image: Image) -> list[tuple[int, Request]]:
    """The read side of the registry API, which the proxy and the agent's registry port share."""
    manifest = f"/v2/{REPO}/manifests/v1"
    blob = f"/v2/{REPO}/blobs/{image.layer_digest}"
    return [
        (8, Request("base", "GET", "/v2/", 200, answer=b"{}")),
        (10, Request("manifest", "GET", manifest, 200, headers=(("Accept", OCI_MANIFEST),), answer=image.manifest)),
        (6, Request("manifest head", "HEAD", manifest, 200)),
        (10, Request("blob", "GET", blob, 200, answer=image.layer)),
        (6, Request("blob head", "HEAD", blob, 200)),
        (4, Request("tags", "GET", f"/v2/{REPO}/tags/list", 200)),
        (8, Request("unknown tag", "GET", f"/v2/{REPO}/manifests/nope", 404)),
        (8, Request("unknown blob", "GET", f"/v2/{REPO}/blobs/{ZERO}", 404)),
        (6, Request("bad digest", "GET", f"/v2/{REPO}/blobs/sha256:short", 400)),
        (6, Request("bad name", "GET", "/v2/Bad_Name/tags/list", 400)),
        (4, Request("unknown path", "GET", "/nothing/here", 404)),
        *malformed(),
    ]


def proxy_mix(image: Image) -> list[tuple[int, Request]]:
    manifest_type = (("Content-Type", OCI_MANIFEST),)
    uploads = f"/v2/{REPO}/blobs/uploads/"
    return [
        *registry_reads(image),
        (6, Request("wrong method", "DELETE", "/v2/", 405)),
        (4, Request("manifest invalid", "PUT", f"/v2/{REPO}/manifests/v2", 400, body=b"{}", headers=manifest_type)),
        (2, Request("manifest 5 MiB", "PUT", f"/v2/{REPO}/manifests/v2", 413, body=MANIFEST_5MIB,
                    headers=manifest_type, may_close=True)),
        (6, Request("bad name with body", "POST", "/v2/Bad_Name/blobs/uploads/", 400, body=SMALL)),
        (4, Request("bad digest with body", "POST", f"{uploads}?digest=sha256:short", 400, body=SMALL)),
        (4, Request("patch unknown", "PATCH", f"{uploads}{UNKNOWN_UID}", 404, body=SMALL)),
        (3, Request("patch unknown chunked", "PATCH", f"{uploads}{UNKNOWN_UID}", 404, body=SMALL, chunked=True)),
        (4, Request("unknown upload", "GET", f"{uploads}{UNKNOWN_UID}", 404)),
        (1, Request("bad digest 12 MiB", "POST", f"{uploads}?digest=sha256:short", 400, body=BIG, may_close=True)),
        (1, Request("bad name held back", "POST", "/v2/Bad_Name/blobs/uploads/", 400, body=SMALL, hold_back=900,
                    may_close=True)),
        (2, Request("bad name trickled", "POST", "/v2/Bad_Name/blobs/uploads/", 400, body=SMALL, hold_back=900,
                    trickle=True)),
    ]


def agent_registry_mix(image: Image) -> list[tuple[int, Request]]:
    uploads = f"/v2/{REPO}/blobs/uploads/"
    return [
        *registry_reads(image),
        (6, Request("read-only", "DELETE", f"/v2/{REPO}/manifests/v1", 405)),
        (6, Request("push with body", "POST", uploads, 405, body=SMALL)),
        (3, Request("push chunked", "PATCH", f"{uploads}{UNKNOWN_UID}", 405, body=SMALL, chunked=True)),
        (2, Request("manifest 5 MiB", "PUT", f"/v2/{REPO}/manifests/v2", 405, body=MANIFEST_5MIB, may_close=True)),
        (1, Request("push 12 MiB", "POST", f"{uploads}?digest={ZERO}", 405, body=BIG, may_close=True)),
        (1, Request("push held back", "POST", uploads, 405, body=SMALL, hold_back=900, may_close=True)),
        (2, Request("push trickled", "POST", uploads, 405, body=SMALL, hold_back=900, trickle=True)),
    ]


def agent_mix(image: Image) -> list[tuple[int, Request]]:
    blob = f"/namespace/{REPO.replace('/', '%2F')}/blobs/{image.layer_digest}"
    unknown = f"/namespace/{REPO.replace('/', '%2F')}/blobs/{ZERO}"
    return [
        (10, Request("health", "GET", "/health", 200, answer=b"OK\n")),
        (4, Request("stats", "GET", "/stats", 200)),
        (14, Request("blob", "GET", blob, 200, answer=image.layer)),
        (8, Request("blob head", "HEAD", blob, 200)),
        (6, Request("blob range", "GET", blob, 206, headers=(("Range", "bytes=5-9"),), answer=image.layer[5:10])),
        (6, Request("unknown blob", "HEAD", unknown, 404)),
        (6, Request("bad digest", "GET", f"/namespace/{REPO}/blobs/sha256:short", 400)),
        (6, Request("bad namespace", "GET", f"/namespace/-bad/blobs/{ZERO}", 400)),
        (6, Request("unknown path", "GET", "/v2/", 404)),
        (6, Request("wrong method", "POST", blob, 405, body=SMALL)),
        (3, Request("wrong method chunked", "PUT", blob, 405, body=SMALL, chunked=True)),
        (2, Request("put 2 MiB", "PUT", blob, 405, body=TWO_MIB, may_close=True)),
        (1, Request("put 12 MiB", "PUT", blob, 405, body=BIG, may_close=True)),
        (1, Request("post held back", "POST", blob, 405, body=SMALL, hold_back=900, may_close=True)),
        (2, Request("post trickled", "POST", blob, 405, body=SMALL, hold_back=900, trickle=True)),
        *malformed(),
    ]


UPGRADE = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
           ("Sec-WebSocket-Version", "13"))


def tracker_mix() -> list[tuple[int, Request]]:
    """The tracker's port speaks HTTP only to upgrade to its websocket, and for /metrics: every other
    request is refused, and the connection ends."""
    return [
        (1, Request("metrics", "GET", "/metrics", 200, ends=True)),
        (4, Request("plain GET", "GET", "/announce", 400, ends=True)),
        (2, Request("plain POST", "POST", "/announce", 400, body=SMALL, ends=True)),
        (3, Request("upgrade elsewhere", "GET", "/elsewhere", 404, headers=UPGRADE, ends=True,
                    answer=b"the announce channel is at /announce")),
        (1, Request("garbage", "GARBAGE", "-", 400, raw=b"GARBAGE\r\n\r\n", ends=True)),
    ]


async def push_test_image(proxy: str) -> Image:
    layer = random.Random(11).randbytes(24 * KiB)
    async with httpx.AsyncClient(base_url=f"http://{proxy}", timeout=30) as client:
        digest, manifest = await push_image(client, REPO, "v1", [layer], oci=True)
    return Image(layer, "sha256:" + hashlib.sha256(layer).hexdigest(), manifest, digest)


@pytest.mark.slow
@pytest.mark.timeout(420)  # about a minute; a server that leaves requests unanswered costs timeouts
async def test_every_request_on_every_http_port_is_answered(spawn: Callable[..., Awaitable[Any]]) -> None:
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], *QUIET)
    agent = await spawn("agent", ["agent"], *QUIET, f"agent.tracker={herd.address('tracker', 'ws')}",
                        f"agent.index={herd.address('index', 'http')}")
    image = await push_test_image(herd.address("proxy"))
    ports = {
        "origin": (herd.address("origin"), origin_mix(image)),
        "index": (herd.address("index"), index_mix(image)),
        "proxy": (herd.address("proxy"), proxy_mix(image)),
        "agent": (agent.address("agent"), agent_mix(image)),
        "agent registry": (agent.address("agent", "registry"), agent_registry_mix(image)),
    }
    tallies: dict[str, Tally] = {}
    for seed, (name, (address, mix)) in enumerate(ports.items()):
        tallies[name] = await stress(address, mix, seed)
    tallies["tracker"] = await stress(herd.address("tracker", "ws"), tracker_mix(), 99, TRACKER_REQUESTS)
    report = json.dumps({name: tally.summary() for name, tally in tallies.items()}, indent=1)
    print(report)
    failures = [f"{name}: {failure}" for name, tally in tallies.items() for failure in tally.failures]
    assert not failures, "\n".join([*failures[:30], report])
    assert [tally.requests for tally in tallies.values()] == [REQUESTS] * len(ports) + [TRACKER_REQUESTS], report
    assert DRAIN_LIMIT < len(TWO_MIB)  # the 2 MiB bodies are too long to drain
