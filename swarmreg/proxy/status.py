"""What ``GET /cmd/status`` answers: the proxy itself and every member of the rings it uses, with
their health (the document's shape: swarmreg.proxy.wire, CMD_STATUS)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from swarmreg.cluster.ring import MemberHealth, Ring
from swarmreg.cluster.rings import role_probe
from swarmreg.cluster.status import rings_health
from swarmreg.config import Address
from swarmreg.proxy.wire import DOWN, UP


def _timestamp(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _row(role: str, member: MemberHealth) -> dict[str, Any]:
    return {"role": role, "address": str(member.address), "state": UP if member.up else DOWN,
            "checked": _timestamp(member.checked), "failures": member.failures, "reason": member.reason}


class ClusterStatus:
    """The status of the proxy at ``address()`` and of ``rings`` (by role), probed with the
    cluster's client context ``tls`` where no schedule probes them."""

    def __init__(self, rings: Mapping[str, Ring], address: Callable[[], Address], tls: ssl.SSLContext | None) -> None:
        self.rings = rings
        self.address = address
        self.probes = {role: role_probe(role, tls) for role in rings}

    async def document(self) -> dict[str, Any]:
        """The status document: the proxy first (it answers, so it is up), then each ring's members."""
        me = MemberHealth(self.address(), True, time.time())
        members = await rings_health(self.rings, self.probes)
        return {"nodes": [_row("proxy", me), *(_row(role, member) for role, member in members)]}
