"""Basic authentication for the registry API, with scrypt password hashes.

Passwords cost the attacker, not the daemon: scrypt runs in worker threads (at most a few at a
time, so guessing cannot take every core), an unknown user costs the same scrypt as a known one
(so the answer's timing does not say which users exist), and a client address that keeps failing
is answered 429 without any scrypt until its failures age out of the window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import trio

from swarmreg.errors import TOOMANYREQUESTS, UNAUTHORIZED, SwarmregError

_N, _R, _P = 1 << 14, 8, 1
# Verified credentials, so a client sending them on every request costs one scrypt, not one each.
_CACHE_LIMIT = 1024
# What an unknown user's password is checked against: a real hash with the same parameters as
# hash_password's (of a password nobody is told), so the answer takes as long as a known user's.
_DUMMY_HASH = "scrypt$16384$8$1$c3dhcm1yZWctZHVtbXkhIQ==$dPxkhqDXS06gAHH/EakJAP3a62a+El0FRnTdh7pe4fc="
# The failure table holds at most this many client addresses (the oldest are forgotten first).
_THROTTLE_ADDRESSES = 4096


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for the configuration's ``[proxy.users]`` table."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the hash ``stored`` (False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=32)
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, binascii.Error):
        return False


class FailureThrottle:
    """Failed sign-ins per client address in a sliding window: after ``limit`` of them within
    ``window`` seconds the address is refused until the oldest one ages out. ``limit`` 0: off.

    Checks still running count as failures until they end, so a client that sends many guesses
    at once gets no more than ``limit`` of them checked. Memory is bounded: each address keeps
    at most ``limit`` timestamps, and the table at most ``max_addresses`` addresses (the one that
    failed longest ago is dropped first).
    """

    def __init__(self, limit: int, window: float, *, max_addresses: int = _THROTTLE_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._checking: dict[str, int] = {}  # checks in progress per address

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 when it may now."""
        if self.limit <= 0:
            return 0
        now = self._clock()
        recent = [at for at in self._failures.get(address, ()) if at + self.window > now]
        if len(recent) + self._checking.get(address, 0) < self.limit:
            return 0
        if len(recent) < self.limit:  # refused for checks in progress: they end within seconds
            return 1
        return max(1, math.ceil(recent[0] + self.window - now))

    @contextmanager
    def checking(self, address: str) -> Iterator[None]:
        """Around one password check from ``address``."""
        if self.limit <= 0:
            yield
            return
        self._checking[address] = self._checking.get(address, 0) + 1
        try:
            yield
        finally:
            self._checking[address] -= 1
            if not self._checking[address]:
                del self._checking[address]

    def failed(self, address: str) -> None:
        """Count a failed sign-in from ``address``."""
        if self.limit <= 0:
            return
        now = self._clock()
        failures = self._failures.pop(address, None) or deque(maxlen=self.limit)
        failures.append(now)
        self._failures[address] = failures  # now the most recent entry
        self._expire(now)

    def __len__(self) -> int:
        return len(self._failures)

    def _expire(self, now: float) -> None:
        # Oldest first: drop addresses whose last failure left the window, then any over the cap.
        while self._failures:
            address, failures = next(iter(self._failures.items()))
            if failures[-1] + self.window > now and len(self._failures) <= self.max_addresses:
                break
            del self._failures[address]


class _Check:
    """One password check in progress, which requests with the same credentials wait for."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.matched: bool | None = None  # None: it did not finish (cancelled)


class BasicAuth:
    """Checks ``Authorization: Basic`` against a user table; no table means no authentication.

    ``limiter`` bounds how many scrypt verifications run at once (in worker threads), and
    ``throttle`` counts failures per client address; the owner (the proxy service) makes both.
    """

    def __init__(self, users: Mapping[str, str], realm: str = "swarmreg", *,
                 limiter: trio.CapacityLimiter | None = None, throttle: FailureThrottle | None = None) -> None:
        self.users = dict(users)
        self.challenge = f'Basic realm="{realm}"'
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(2)
        self.throttle = throttle if throttle is not None else FailureThrottle(0, 60.0)
        self._verified: set[bytes] = set()
        self._checks: dict[bytes, _Check] = {}  # checks running now, by credentials

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    async def user(self, authorization: str | None, client: str = "") -> str | None:
        """The authenticated user, None when authentication is off; UNAUTHORIZED otherwise, or
        TOOMANYREQUESTS when ``client`` (the peer's address) failed too often of late."""
        if not self.enabled:
            return None
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep:
            raise self.refusal("authentication required")
        # The name's length first: "a\0b" with "c" and "a" with "b\0c" are different credentials.
        key = hashlib.sha256(f"{len(name)}:{name}\0{password}".encode()).digest()
        while True:
            if key in self._verified:  # known right: costs no scrypt, so a throttled address may use it
                return name
            shared = self._checks.get(key)
            if shared is None:
                break
            # The same credentials are being checked now (a client's parallel requests): share
            # that answer, so they cost one scrypt and count as at most one failure.
            await shared.done.wait()
            if shared.matched is False:
                raise self.refusal("invalid username or password")
            # Matched (now cached), or that check was cancelled: look again.
        if wait := self.throttle.retry_after(client):
            raise SwarmregError(TOOMANYREQUESTS, "too many failed sign-ins from this address",
                                {"retry_after": wait}, headers={"Retry-After": str(wait)})
        stored = self.users.get(name)
        check = self._checks[key] = _Check()
        try:
            # An unknown user is checked against a dummy hash: the same work, the same answer time.
            with self.throttle.checking(client):
                matches = await trio.to_thread.run_sync(verify_password, password, stored or _DUMMY_HASH,
                                                        limiter=self.limiter)
            check.matched = stored is not None and matches
            if not check.matched:
                self.throttle.failed(client)
                raise self.refusal("invalid username or password")
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified.add(key)
            return name
        finally:
            del self._checks[key]
            check.done.set()

    def refusal(self, message: str) -> SwarmregError:
        """401 with the Basic challenge."""
        return SwarmregError(UNAUTHORIZED, message, headers={"WWW-Authenticate": self.challenge})
