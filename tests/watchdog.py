"""A hung Trio test fails with the stack of every task, a little before pytest-timeout would fire.

pytest-timeout alone shows only the main thread's stack, which for a Trio test is the event loop
waiting in epoll: it says nothing about which task waits on what. The watchdog wraps the Trio run of
the test (its fixtures included): once a real-time timer expires, it prints the whole task tree
to stderr, cancels everything and fails the test. The timer is a thread on the wall clock, so a
test on trio's MockClock is watched in real seconds and its clock is never advanced.
If the test cannot be cancelled (a shielded wait), pytest-timeout still fires afterwards.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterator
from functools import partial
from types import FrameType
from typing import Any

import pytest
import pytest_timeout
import trio

# The watchdog fires this long before the pytest-timeout deadline (at most a tenth of it).
MARGIN = 30.0
_TRIO_CORE = os.path.join(os.path.dirname(trio.__file__), "_core", "")


class TestHung(Exception):
    """The test (or one of its fixtures) ran past its deadline; the task tree is on stderr."""

    __test__ = False  # not a test class, whatever its name says


def watchdog_seconds(item: pytest.Item) -> float | None:
    """When the watchdog of ``item`` fires: a little before its pytest-timeout, or None without one."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and (marker.args or "timeout" in marker.kwargs):
        timeout = marker.args[0] if marker.args else marker.kwargs["timeout"]
    else:
        timeout = pytest_timeout.get_env_settings(item.config).timeout
    if not timeout or float(timeout) <= 0:
        return None
    timeout = float(timeout)
    return timeout - min(MARGIN, timeout / 10)


def _await_frames(awaitable: Any) -> Iterator[tuple[FrameType, int]]:
    """The frames ``awaitable`` waits in, outermost first: Task.iter_await_frames, which also
    goes through the coroutine wrapper a class's ``__await__`` returns (hypercorn's TCPServer)."""
    while awaitable is not None:
        if hasattr(awaitable, "cr_frame"):
            frame, awaitable = awaitable.cr_frame, awaitable.cr_await
        elif hasattr(awaitable, "gi_frame"):
            frame, awaitable = awaitable.gi_frame, awaitable.gi_yieldfrom
        elif hasattr(awaitable, "ag_frame"):
            frame, awaitable = awaitable.ag_frame, awaitable.ag_await
        elif type(awaitable).__name__ in ("coroutine_wrapper", "async_generator_asend", "async_generator_athrow"):
            # These hide what they wrap; the garbage collector knows.
            inner = [ref for ref in gc.get_referents(awaitable) if hasattr(ref, ("cr_frame", "ag_frame")[
                type(awaitable).__name__ != "coroutine_wrapper"])]
            frame, awaitable = None, inner[0] if inner else None
        else:
            return
        if frame is not None:
            yield frame, frame.f_lineno


def _task_lines(task: trio.lowlevel.Task, depth: int) -> Iterator[str]:
    indent = "    " * depth
    yield f"{indent}task {task.name!r}"
    frames = [(frame, line) for frame, line in _await_frames(task.coro)
              if not frame.f_code.co_filename.startswith(_TRIO_CORE)]  # the scheduler's own frames
    for line in traceback.StackSummary.extract(frames).format():
        for part in line.rstrip("\n").split("\n"):
            yield f"{indent}  {part}"
    for nursery in task.child_nurseries:
        for child in sorted(nursery.child_tasks, key=lambda t: t.name):
            yield from _task_lines(child, depth + 1)


def format_task_tree() -> str:
    """Every task of the current Trio run, from the root task down, each with its await stack.

    Call it from the Trio thread while no task runs (a ``run_sync_soon`` callback), or from a
    task, whose own stack then shows as empty.
    """
    root = trio.lowlevel.current_root_task()
    return "(no trio run)" if root is None else "\n".join(_task_lines(root, 0))


async def _watched(fn: Callable[[], Awaitable[Any]], seconds: float, nodeid: str) -> Any:
    __tracebackhide__ = True
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:

        def bark() -> None:  # in the Trio thread, between task steps
            print(f"\n{'+' * 20} {nodeid} hung: every Trio task after {seconds:g} s {'+' * 20}\n"
                  f"{format_task_tree()}\n{'+' * 20} cancelling the test and its fixtures\n",
                  file=sys.stderr, flush=True)
            scope.cancel()

        def expire() -> None:  # in the timer's thread
            try:
                token.run_sync_soon(bark)
            except trio.RunFinishedError:
                pass

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.name = f"trio watchdog {nodeid}"
        timer.start()
        try:
            return await fn()
        except BaseException as error:
            if not scope.cancel_called or isinstance(error, trio.Cancelled):
                raise
            # pytest-trio hands back the Cancelled of each fixture: only other errors are news.
            _, rest = error.split(trio.Cancelled) if isinstance(error, BaseExceptionGroup) else (None, error)
            raise TestHung(f"{nodeid} still running after {seconds:g} s; the stack of every task "
                           f"is on stderr") from rest
        finally:
            timer.cancel()
    raise TestHung(f"{nodeid} still running after {seconds:g} s; the stack of every task is on stderr")


def watched_run(fn: Callable[[], Awaitable[Any]], *args: Any, seconds: float, nodeid: str,
                **kwargs: Any) -> Any:
    """``trio.run`` for pytest-trio's ``run=`` marker option, with the watchdog around ``fn``."""
    __tracebackhide__ = True
    return trio.run(partial(_watched, fn, seconds, nodeid), *args, **kwargs)


def add_watchdogs(items: list[pytest.Item]) -> None:
    """Run every Trio test of ``items`` under the watchdog (after pytest-trio's trio_mode marked them)."""
    for item in items:
        marker = item.get_closest_marker("trio")
        if marker is None or marker.kwargs.get("run", trio.run) is not trio.run:
            continue
        seconds = watchdog_seconds(item)
        if seconds is not None:
            # Put first, so pytest-trio finds this marker's runner before trio_mode's.
            item.add_marker(pytest.mark.trio(run=partial(watched_run, seconds=seconds, nodeid=item.nodeid)),
                            append=False)


def close_abandoned_trio_run(error: BaseException) -> None:
    """Finish the Trio run that ``error`` (pytest-timeout's, raised in the event loop's wait) left.

    trio.run keeps its run loop in a generator; an exception out of the loop's I/O wait leaves
    that generator suspended, and while the traceback holds it every later trio.run in the
    session refuses to start ("run() from inside a run()"). Closing it ends the run properly.
    """
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is trio.run.__code__:
            loop = frame.f_locals.get("gen")
            if isinstance(loop, Generator) and loop.gi_frame is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # "guest run got abandoned": it did
                    loop.close()
        tb = tb.tb_next
