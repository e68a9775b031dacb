"""SingleFlight with real Trio tasks: one run per key, shared by every waiter, whoever goes away."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from swarmreg.errors import BLOB_UNKNOWN, INTERNAL, UNAVAILABLE, SwarmregError
from swarmreg.singleflight import SingleFlight


class Work:
    """Work that counts its runs and finishes (or fails) when the test says so."""

    def __init__(self, result: str = "done", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.runs = 0
        self.release = trio.Event()

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def gather(flights: SingleFlight[str, None, str], work: Work, waiters: int) -> list[object]:
    """Start ``waiters`` callers of ``work`` and let it finish; what each got, result or error."""
    outcomes: list[object] = []

    async def wait() -> None:
        try:
            outcomes.append(await flights.run("key", work))
        except SwarmregError as error:
            outcomes.append(error)

    async with trio.open_nursery() as nursery:
        for _ in range(waiters):
            nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        work.release.set()
    return outcomes


async def test_concurrent_waiters_share_one_run(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    work = Work("the result")
    assert await gather(flights, work, 5) == ["the result"] * 5
    assert work.runs == 1


async def test_a_waiter_that_goes_away_does_not_cancel_the_work(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    work = Work("the result")
    first = trio.CancelScope()
    results: list[str] = []

    async def impatient() -> None:
        with first:
            results.append(await flights.run("key", work))

    async def patient() -> None:
        results.append(await flights.run("key", work))

    async with trio.open_nursery() as waiters:
        waiters.start_soon(impatient)
        await trio.testing.wait_all_tasks_blocked()
        waiters.start_soon(patient)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # the requester that started the work goes away
        await trio.testing.wait_all_tasks_blocked()
        work.release.set()
    assert first.cancelled_caught
    assert results == ["the result"]
    assert work.runs == 1


async def test_a_swarmreg_error_reaches_every_waiter_as_is(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    error = SwarmregError(BLOB_UNKNOWN, "no such blob")
    outcomes = await gather(flights, Work(error=error), 3)
    assert outcomes == [error] * 3


async def test_any_other_exception_is_logged_and_internal_for_every_waiter(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    with caplog.at_level(logging.ERROR, "swarmreg.singleflight"):
        outcomes = await gather(flights, Work(error=AssertionError("a bug")), 3)
    assert len(outcomes) == 3
    error_id = outcomes[0].detail["error_id"]
    for outcome in outcomes:
        assert isinstance(outcome, SwarmregError) and outcome.code is INTERNAL
        # The exception's text is for the log only: the waiters' answer names an id the log has.
        assert "a bug" not in outcome.message and "AssertionError" not in outcome.message
        assert error_id in outcome.message
    assert [r.message for r in caplog.records] == [f"test work of key failed (error id {error_id})"]
    assert caplog.records[0].exc_info is not None  # with its traceback


async def test_waiters_are_told_when_the_nursery_is_cancelled() -> None:
    outcomes: list[object] = []
    async with trio.open_nursery() as waiters:
        async with trio.open_nursery() as service:
            flights = SingleFlight[str, None, str]("test work", service)

            async def wait() -> None:
                try:
                    outcomes.append(await flights.run("key", Work()))
                except SwarmregError as error:
                    outcomes.append(error)

            for _ in range(2):
                waiters.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            service.cancel_scope.cancel()  # the service shuts down
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, SwarmregError) and outcome.code is UNAVAILABLE
        assert "shutting down" in outcome.message


async def test_the_key_is_forgotten_when_the_work_ends(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    failing = Work(error=SwarmregError(BLOB_UNKNOWN))
    failing.release.set()
    with pytest.raises(SwarmregError):
        await flights.run("key", failing)
    work = Work("second")
    work.release.set()
    assert await flights.run("key", work) == "second"
    assert await flights.run("key", work) == "second"
    assert (failing.runs, work.runs) == (1, 2)


async def test_other_keys_run_on_their_own(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work", nursery)
    slow, quick = Work("slow"), Work("quick")
    quick.release.set()
    flight = flights.start("slow", lambda _: slow(), lambda: None)
    assert await flights.run("quick", quick) == "quick"
    assert not flight.done.is_set()
    slow.release.set()
    assert await flight.wait() == "slow"


async def test_waiters_see_the_state_while_the_work_runs() -> None:
    failed: list[tuple[list[str], SwarmregError]] = []
    progressed = trio.Event()

    async def work(progress: list[str]) -> None:
        progress.append("halfway")
        progressed.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as service:
        flights = SingleFlight[str, list[str], None](
            "test work", service, on_error=lambda state, error: failed.append((state, error)))
        flight = flights.start("key", work, list)
        assert flights.start("key", work, list) is flight, "a second caller joins the running flight"
        await progressed.wait()
        assert flight.state == ["halfway"] and not flight.done.is_set()
        service.cancel_scope.cancel()
    with pytest.raises(SwarmregError) as raised:
        await flight.wait()
    assert raised.value.code is UNAVAILABLE
    assert failed == [(["halfway"], raised.value)], "on_error hears of the failure, with the state"


async def test_starting_before_the_nursery_is_bound_says_so(nursery: trio.Nursery) -> None:
    flights = SingleFlight[str, None, str]("test work")
    work = Work("bound")
    work.release.set()
    with pytest.raises(RuntimeError, match="bind"):
        await flights.run("key", work)
    flights.bind(nursery)
    assert await flights.run("key", work) == "bound"
