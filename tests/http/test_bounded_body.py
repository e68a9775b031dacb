"""The request body buffer's bound (swarmreg.http.app.BoundedBody): the connection's reader waits
once the buffer is full, whatever the size of the chunks."""

from __future__ import annotations

import trio

from swarmreg.http.app import BODY_HIGH_WATER, BoundedBody


async def reader_waits(body: BoundedBody) -> bool:
    with trio.move_on_after(0.05) as waited:
        await body.wait_drained()
    return waited.cancelled_caught


async def test_tiny_chunks_fill_the_buffer_by_what_they_cost_not_by_their_bytes() -> None:
    # A chunked body of 1-byte chunks buffered 8 million of them (some 330 MB of objects) before
    # the reader waited: the bound counted payload bytes only.
    body = BoundedBody(None, None)
    held = 0
    while held % 4096 or not await reader_waits(body):
        body.append(b"x")
        held += 1
        assert held <= 200_000, "the buffer holds too many tiny chunks"
    # Taking chunks out lets the reader go on.
    async for _ in body:
        held -= 1
        if held % 1024 == 0 and not await reader_waits(body):
            break
    assert held > 0


async def test_large_chunks_fill_it_at_the_high_water_mark() -> None:
    body = BoundedBody(None, None)
    chunk = b"x" * (1 << 20)
    for _ in range(BODY_HIGH_WATER // len(chunk) - 1):
        body.append(chunk)
    assert not await reader_waits(body)
    body.append(chunk)
    assert await reader_waits(body)
    body.set_complete()
    assert len(await body) == BODY_HIGH_WATER
