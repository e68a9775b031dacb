"""The health of every member of a daemon's rings, fresh enough to report (the proxy's
``GET /cmd/status``, ``swarmreg status``).

A ring that is probed on a schedule is reported as its last probes left it. One that is not (a
role's single address, ``tracker.origins``, ``health_interval = 0``), and a member never checked
yet, are probed now, so every member is reported as it was last found, and when.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from swarmreg.cluster.ring import MemberHealth, Probe, Ring

NO_MEMBER = "its name resolves to no member"


async def rings_health(rings: Mapping[str, Ring], probes: Mapping[str, Probe]) -> list[tuple[str, MemberHealth]]:
    """Each member of each ring with its role, after probing (with ``probes[role]`` where the ring
    has none of its own) the members that no schedule checks; a ring whose DNS name has no
    records is one entry, its name, down."""
    async with trio.open_nursery() as nursery:
        for role, ring in rings.items():
            for member in ring.health():
                if not ring.probed or member.checked is None:
                    nursery.start_soon(ring.check, member.address, ring.probe or probes[role])
    found: list[tuple[str, MemberHealth]] = []
    for role, ring in rings.items():
        if not ring.members and ring.name is not None:
            found.append((role, MemberHealth(ring.name, False, None, reason=NO_MEMBER)))
        found += [(role, member) for member in ring.health()]
    return found
