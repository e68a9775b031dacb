"""One run of a piece of work per key, however many tasks wait for it.

A fetch or a hash that several requests need runs once, in a long-lived
nursery its owner (a service) gives, never in a requester's task: a requester
that goes away does not cancel the work the others wait for, and every waiter
gets the result or a SwarmregError. A key is forgotten when its work ends, so
the next call runs it again; callers cache results themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar, cast

import trio

from swarmreg.errors import UNAVAILABLE, SwarmregError, internal_error, is_storage_full, log_failure, os_error

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
T = TypeVar("T")


class Flight(Generic[S, T]):
    """One key's work in progress: the caller's per-key ``state`` and, once ``done``, its outcome."""

    def __init__(self, state: S) -> None:
        self.state = state  # the caller's object for this key, visible to waiters while the work runs
        self.done = trio.Event()
        self.error: SwarmregError | None = None
        self._result: T | None = None

    async def wait(self) -> T:
        """The work's result, once it has ended; raises its SwarmregError if it failed."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return cast(T, self._result)  # T may be None itself


class SingleFlight(Generic[K, S, T]):
    """Runs each key's work once at a time in the owner's nursery; waiters share its outcome.

    ``what`` names the work in logs and error messages. The nursery is given here
    or, when the owner creates this before its nursery exists, with ``bind``.
    ``on_error(state, error)`` is told of a failure before the waiters are.
    """

    def __init__(self, what: str, nursery: trio.Nursery | None = None, *,
                 on_error: Callable[[S, SwarmregError], None] | None = None) -> None:
        self.what = what
        self.on_error = on_error
        self._nursery = nursery
        self._flights: dict[K, Flight[S, T]] = {}

    def bind(self, nursery: trio.Nursery) -> None:
        """Run the work in ``nursery`` from now on (the owner's, once it is open)."""
        self._nursery = nursery

    def start(self, key: K, work: Callable[[S], Awaitable[T]], state: Callable[[], S]) -> Flight[S, T]:
        """The key's flight: the running one, or a new one whose work starts with a new ``state()``."""
        flight = self._flights.get(key)
        if flight is None:
            if self._nursery is None:
                raise RuntimeError(f"{self.what}: SingleFlight.bind() its nursery before starting work")
            flight = Flight[S, T](state())
            self._nursery.start_soon(self._run, key, work, flight)
            self._flights[key] = flight
        return flight

    def running(self, key: K) -> Flight[S, T] | None:
        """The key's flight while its work runs, else None."""
        return self._flights.get(key)

    async def run(self: SingleFlight[K, None, T], key: K, work: Callable[[], Awaitable[T]]) -> T:
        """The result of ``work`` for ``key``, run now or joined if it is running already."""
        return await self.start(key, lambda _: work(), lambda: None).wait()

    async def _run(self, key: K, work: Callable[[S], Awaitable[T]], flight: Flight[S, T]) -> None:
        try:
            flight._result = await work(flight.state)
        except SwarmregError as error:
            flight.error = error
        except Exception as error:  # a full disk, a bug: this work fails, the service runs on
            if is_storage_full(error):  # STORAGE_FULL, without the file's path
                log_failure(log, f"{self.what} of {key}", error)
                flight.error = os_error(error, f"{self.what} failed")
            else:
                flight.error = internal_error(log, f"{self.what} of {key} failed")
        except BaseException:  # the nursery is cancelled: the service is stopping
            flight.error = SwarmregError(UNAVAILABLE, f"{self.what} interrupted: shutting down")
            raise
        finally:
            del self._flights[key]
            try:
                if flight.error is not None and self.on_error is not None:
                    self.on_error(flight.state, flight.error)
            finally:
                flight.done.set()  # even if on_error failed: no waiter is left hanging
