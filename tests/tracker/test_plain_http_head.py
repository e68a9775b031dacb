"""The request head the tracker's port reads before it tells a websocket handshake from plain HTTP."""

from __future__ import annotations

import trio
import trio.testing

from swarmreg.tracker.http import MAX_HEAD, read_head


async def head_read(*pieces: bytes) -> bytes | None:
    client, server = trio.testing.memory_stream_pair()
    for piece in pieces:
        await client.send_all(piece)
    await client.send_eof()
    with trio.fail_after(5):
        return await read_head(server)


async def test_a_head_past_the_limit_is_refused_even_when_its_end_comes_in_the_next_read() -> None:
    # The limit was checked before each read only: a head of up to twice MAX_HEAD, its end in
    # the second read, was answered.
    line = b"GET /metrics HTTP/1.1\r\n"
    assert await head_read(line + b"X: " + b"a" * (MAX_HEAD + 3000) + b"\r\n\r\n") is None
    assert await head_read(line, b"X: " + b"a" * (MAX_HEAD - 100), b"a" * 2000 + b"\r\n\r\n") is None


async def test_heads_within_the_limit_are_read_whole_with_what_follows() -> None:
    head = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD - 40) + b"\r\n\r\n"
    assert len(head) <= MAX_HEAD + 4
    assert await head_read(head[:100], head[100:] + b"next") == head + b"next"
    assert await head_read(b"GET / HTTP/1.1\r\n") is None  # closed before its end
