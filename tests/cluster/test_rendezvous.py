"""Rendezvous hashing: every client agrees on a key's owners, and a ring change moves only the
keys of the member that came or went."""

from __future__ import annotations

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address

MEMBERS = [Address("10.0.0.1", 15002), Address("10.0.0.2", 15002), Address("10.0.0.3", 15002),
           Address("10.0.0.4", 15002)]
KEYS = [f"sha256:{n:064x}" for n in range(2000)]


def test_the_order_is_the_same_whatever_order_the_members_are_listed_in() -> None:
    for key in KEYS[:50]:
        assert rank(key, MEMBERS) == rank(key, list(reversed(MEMBERS)))
        assert sorted(rank(key, MEMBERS), key=str) == sorted(MEMBERS, key=str)


def test_keys_spread_over_the_members() -> None:
    firsts = [rank(key, MEMBERS)[0] for key in KEYS]
    for member in MEMBERS:  # about 500 each
        assert 400 < firsts.count(member) < 600


def test_removing_a_member_moves_only_its_keys_to_their_next_owner() -> None:
    gone = MEMBERS[1]
    rest = [m for m in MEMBERS if m != gone]
    moved = 0
    for key in KEYS:
        before, after = rank(key, MEMBERS), rank(key, rest)
        assert after == [m for m in before if m != gone], "the others keep their order"
        moved += before[0] != after[0]
    assert moved == sum(rank(key, MEMBERS)[0] == gone for key in KEYS)


def test_adding_a_member_takes_keys_only_from_others_to_itself() -> None:
    new = Address("10.0.0.9", 15002)
    for key in KEYS:
        before, after = rank(key, MEMBERS)[0], rank(key, [*MEMBERS, new])[0]
        assert after in (before, new)
