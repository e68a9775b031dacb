"""The read size of a connection grows while a body streams in and falls back when reads come short."""

from __future__ import annotations

from swarmreg.http.serve import RECV_MAX, RECV_MIN, next_recv_size


def test_full_reads_grow_the_size_up_to_the_limit() -> None:
    size, sizes = RECV_MIN, []
    for _ in range(10):
        size = next_recv_size(size, size)
        sizes.append(size)
    assert sizes[0] == 2 * RECV_MIN
    assert sizes[-1] == RECV_MAX == max(sizes)


def test_short_reads_shrink_it_back_and_middling_ones_keep_it() -> None:
    assert next_recv_size(RECV_MAX, RECV_MAX // 2) == RECV_MAX
    size = RECV_MAX
    for _ in range(10):
        size = next_recv_size(size, 200)  # a small request on a connection that had a body
    assert size == RECV_MIN
    assert next_recv_size(RECV_MIN, 0) == RECV_MIN
