"""Rendezvous (highest random weight) hashing over xxhash.

Every member scores every key with ``xxh3_64(member + "\\0" + key)``; a key's owners are the
members with the highest scores. Adding or removing a member moves only the keys it owns (about
1/n of them), and every client computes the same order from the same member list, with no
coordination. A few lines, so no library: uhashring is a consistent-hash ring with virtual nodes,
which moves more keys when the ring changes and needs tuning that rendezvous hashing does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import xxhash

M = TypeVar("M")


def score(member: str, key: str) -> int:
    """The weight of ``member`` for ``key``: the higher, the earlier the member owns the key."""
    return xxhash.xxh3_64_intdigest(f"{member}\0{key}".encode())


def rank(key: str, members: Iterable[M]) -> list[M]:
    """``members`` in the order they own ``key``: the first owns it, the next takes over from it.
    Members are told apart by ``str()``; ties (never seen in 64 bits) go by that text."""
    return sorted(members, key=lambda member: (-score(str(member), key), str(member)))
