"""One role's members (a static list, or the A/AAAA records of a DNS name), which of them are up,
and the order in which they own a key.

Members are checked actively (a probe, ``GET /health`` or its websocket form, every
``health_interval``) and passively (a client that fails to reach one calls ``mark_down``): a
member down is skipped until a probe finds it up again or its backoff ends. Lists of one member
(the per-role addresses, ``proxy.origin`` and the like) are rings too, which never skip it.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address

log = logging.getLogger(__name__)

# A probe of one member: returns when it is up (with the name of the member's run, if it tells),
# raises (anything) or takes too long when not.
Probe = Callable[[Address], Awaitable[str | None]]

# A member that a request failed to reach is skipped for 1 s, then twice as long for each
# failure in a row, up to the ring's max_backoff.
FIRST_BACKOFF = 1.0


@attrs.define
class _Down:
    until: float
    failures: int


@attrs.frozen
class MemberHealth:
    """What a ring knows of one member's health (``swarmreg status``): ``up`` is whether the
    last health result (a probe, or a request that failed to reach it) was good; ``checked`` its
    wall-clock time (None: never checked); ``failures`` in a row, and the last one's ``reason``."""

    address: Address
    up: bool
    checked: float | None
    failures: int = 0
    reason: str | None = None


class Ring:
    """The members of one role and their health; ``run`` (a service) keeps both up to date.

    ``source`` is a tuple of addresses (the members as written) or one Address whose host is a
    DNS name (the members are its records, each at that port, looked up every
    ``resolve_interval``). Members are dialled at their addresses: with ``[tls]``, a DNS ring's
    certificates carry their IP addresses, as every node's carries the address it is reached at.
    """

    def __init__(self, role: str, source: Sequence[Address] | Address, *, probe: Probe | None = None,
                 health_interval: float = 5.0, resolve_interval: float = 30.0, max_backoff: float = 30.0) -> None:
        self.role = role
        self.name = source if isinstance(source, Address) else None
        self.members: tuple[Address, ...] = () if isinstance(source, Address) else tuple(dict.fromkeys(source))
        # Every member this ring ever had (what a tracker's peer store may still hold of them).
        self.seen: set[Address] = set(self.members)
        self.probe = probe
        self.health_interval = health_interval
        self.resolve_interval = resolve_interval
        self.max_backoff = max_backoff
        self._down: dict[Address, _Down] = {}
        self._instances: dict[Address, str] = {}
        # When each member's health was last learnt (time.time()), and why it was last found down.
        self._checked: dict[Address, float] = {}
        self._reasons: dict[Address, str] = {}
        # How often each member came back: found up after being down, or restarted (a new
        # instance). Whoever keeps data for members (origins) hands it to them again.
        self.comebacks: dict[Address, int] = {}
        self.version = 0  # grows with every change of members or of their health
        self._changed = trio.Event()

    @classmethod
    def static(cls, role: str, address: Address) -> Ring:
        """A ring of the one member ``address``, never probed (there is nobody to move to)."""
        return cls(role, (address,))

    def __repr__(self) -> str:
        return f"Ring({self.role}, {self.name or list(map(str, self.members))})"

    # -- reading -------------------------------------------------------------------------------

    def live(self, member: Address) -> bool:
        down = self._down.get(member)
        return down is None or trio.current_time() >= down.until

    def order(self, key: str = "") -> list[Address]:
        """Every member in the order it owns ``key``, the live ones first (each group in ring order).
        The empty key gives every client the same order: "any live member", agreed on by all."""
        ranked = rank(key, self.members)
        return [m for m in ranked if self.live(m)] + [m for m in ranked if not self.live(m)]

    def owners(self, key: str, replicas: int) -> list[Address]:
        """The ``replicas`` members that own ``key`` (fewer in a smaller ring), the live ones first."""
        ranked = rank(key, self.members)[:max(1, replicas)]
        return [m for m in ranked if self.live(m)] + [m for m in ranked if not self.live(m)]

    @property
    def probed(self) -> bool:
        """Whether ``run`` checks the members every ``health_interval`` (else only requests do)."""
        return self.probe is not None and self.health_interval > 0

    def health(self) -> list[MemberHealth]:
        """Every member's health, in the order the members are listed."""
        return [MemberHealth(member, member not in self._down, self._checked.get(member),
                             self._down[member].failures if member in self._down else 0, self._reasons.get(member))
                for member in self.members]

    async def wait_changed(self, version: int) -> int:
        """Wait until the ring is no longer at ``version``; returns the new one."""
        while self.version == version:
            await self._changed.wait()
        return self.version

    # -- health --------------------------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    def mark_down(self, member: Address, reason: str) -> None:
        """``member`` failed a request or a probe: skip it for a backoff (longer after each failure)."""
        if member not in self.members:
            return
        down = self._down.get(member)
        failures = down.failures + 1 if down is not None else 1
        backoff = min(self.max_backoff, FIRST_BACKOFF * 2 ** min(failures - 1, 30))
        was_live = self.live(member)
        self._down[member] = _Down(trio.current_time() + backoff, failures)
        self._checked[member], self._reasons[member] = time.time(), reason
        if was_live:
            log.warning("%s %s is down (%s); skipped for %g s", self.role, member, reason, backoff)
            self._bump()

    def mark_up(self, member: Address, instance: str | None = None) -> None:
        """``member`` answered (as ``instance``, if it said): it is live again at once."""
        was_down = self._down.pop(member, None) is not None
        self._checked[member] = time.time()
        self._reasons.pop(member, None)
        restarted = instance is not None and self._instances.get(member, instance) != instance
        if instance is not None:
            self._instances[member] = instance
        if was_down or restarted:
            log.info("%s %s is %s", self.role, member, "up again" if was_down else "back after a restart")
            self.comebacks[member] = self.comebacks.get(member, 0) + 1
            self._bump()

    async def check(self, member: Address, probe: Probe | None = None) -> None:
        """Probe ``member`` once (with ``probe``, else the ring's own) and mark it up or down."""
        probe = probe or self.probe
        assert probe is not None
        timeout = max(1.0, min(self.health_interval, 5.0))
        try:
            with trio.fail_after(timeout):
                instance = await probe(member)
        except Exception as error:  # any failure of the probe is the member's trouble
            self.mark_down(member, f"health check: {type(error).__name__}")
        else:
            self.mark_up(member, instance)

    async def _check_forever(self) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for member in self.members:
                    nursery.start_soon(self.check, member)
            await trio.sleep(self.health_interval)

    # -- DNS -------------------------------------------------------------------------------------

    async def resolve(self) -> None:
        """Look the ring's name up; its A/AAAA records become the members. A failed lookup keeps
        the members it had (logged): a DNS server down for a moment does not empty the ring."""
        assert self.name is not None
        try:
            records = await trio.socket.getaddrinfo(self.name.host, self.name.port, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("%s ring: looking up %s failed: %s", self.role, self.name, error)
            return
        members = tuple(sorted({Address(str(record[4][0]), self.name.port) for record in records}, key=str))
        if members != self.members:
            added, gone = set(members) - set(self.members), set(self.members) - set(members)
            log.info("%s ring %s: %d member(s)%s%s", self.role, self.name, len(members),
                     f", added {', '.join(sorted(map(str, added)))}" if added else "",
                     f", removed {', '.join(sorted(map(str, gone)))}" if gone else "")
            self.members = members
            self.seen |= set(members)
            for member in gone:
                self._down.pop(member, None)
                self._checked.pop(member, None)
                self._reasons.pop(member, None)
            self._bump()

    async def _resolve_forever(self) -> None:
        while True:
            await trio.sleep(self.resolve_interval)
            await self.resolve()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look the name up (a DNS ring), then keep the members and their health up to date; ready
        once the first lookup is done (the members may still be unknown if it failed)."""
        if self.name is not None:
            await self.resolve()
        task_status.started()
        async with trio.open_nursery() as nursery:
            if self.name is not None:
                nursery.start_soon(self._resolve_forever)
            if self.probe is not None and self.health_interval > 0:
                nursery.start_soon(self._check_forever)
            if not nursery.child_tasks:
                await trio.sleep(math.inf)
