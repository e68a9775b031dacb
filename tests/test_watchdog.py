"""A hung test fails within its timeout, and a hung Trio test shows the stack of every task.

The hanging tests run in a pytest child process with a 3 s timeout, the suite's conftest loaded
as a plugin, so what is checked is what a hang in the suite would print.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])  # where the tests package is
HANGING = '''
import pytest
import trio


async def wait_for_the_answer_that_never_comes(event):
    await event.wait()


async def test_hangs_in_a_child_task():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_the_answer_that_never_comes, trio.Event(), name="the stuck one")
        await trio.sleep_forever()


@pytest.fixture
async def server_that_never_stops():
    yield
    await wait_for_the_answer_that_never_comes(trio.Event())


async def test_hangs_in_a_fixture_teardown(server_that_never_stops):
    pass


async def test_hangs_on_a_mock_clock(autojump_clock):
    await trio.sleep(1000)  # the autojump clock is there at once
    await wait_for_the_answer_that_never_comes(trio.Event())


async def test_hangs_where_no_cancel_reaches():
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(__import__("time").sleep, 15, abandon_on_cancel=False)




def test_a_plain_test_that_hangs():
    __import__("time").sleep(15)


async def test_still_runs_after_them():
    await trio.sleep(0)
'''


def run_pytest(tmp_path: Path, name: str, source: str, timeout: int) -> tuple[str, float]:
    """Run the tests in ``source`` in a pytest child process with the suite's plugins and hooks."""
    (tmp_path / name).write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--timeout", str(timeout), "-v", name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])})
    return done.stdout + done.stderr, time.monotonic() - started


def outcome(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if f"::{name} " in line and "%]" in line)
    return line.split()[1]


def section(output: str, name: str) -> str:
    """The failure report of test ``name``."""
    start = output.index(f"_ {name} _")
    end = output.find("\n____", start + 1)
    return output[start:end if end != -1 else None]


def test_hung_tests_fail_within_their_timeout_showing_every_trio_task(tmp_path: Path) -> None:
    output, elapsed = run_pytest(tmp_path, "test_hanging.py", HANGING, 3)
    assert elapsed < 60, output  # six tests, five of them hanging for 3 s at most (and 15 s if unbounded)
    for name in ("test_hangs_in_a_child_task", "test_hangs_in_a_fixture_teardown", "test_hangs_on_a_mock_clock",
                 "test_hangs_where_no_cancel_reaches", "test_a_plain_test_that_hangs"):
        assert outcome(output, name) in ("FAILED", "ERROR"), output
    assert outcome(output, "test_still_runs_after_them") == "PASSED", output

    child = section(output, "test_hangs_in_a_child_task")
    assert "TestHung" in child and "after 2.7 s" in child, child
    # The tree: the test's task, and below it the stuck child with the line it waits on.
    assert "task 'the stuck one'" in child, child
    assert "in wait_for_the_answer_that_never_comes" in child and "await event.wait()" in child, child
    assert "in test_hangs_in_a_child_task" in child and "await trio.sleep_forever()" in child, child
    assert "Timeout (>3.0s) from pytest-timeout" not in child, "the watchdog fired first"

    teardown = section(output, "test_hangs_in_a_fixture_teardown")
    assert "TestHung" in teardown and "in server_that_never_stops" in teardown, teardown
    mock = section(output, "test_hangs_on_a_mock_clock")
    assert "TestHung" in mock and "in wait_for_the_answer_that_never_comes" in mock, mock
    # A shielded wait outlives the watchdog's cancel: pytest-timeout ends it, after the tree was shown.
    shielded = section(output, "test_hangs_where_no_cancel_reaches")
    assert "Timeout (>3.0s) from pytest-timeout" in shielded and "in test_hangs_where_no_cancel_reaches" in shielded
    assert "Timeout (>3.0s) from pytest-timeout" in section(output, "test_a_plain_test_that_hangs")


def test_the_watchdog_leaves_passing_and_failing_trio_tests_as_they_are(tmp_path: Path) -> None:
    output, _ = run_pytest(tmp_path, "test_plain.py", textwrap.dedent('''
        import trio

        async def test_passes(autojump_clock):
            await trio.sleep(3600)
            assert trio.current_time() >= 3600

        async def test_fails():
            assert 1 + 1 == 3, "arithmetic"
    '''), 60)
    assert outcome(output, "test_passes") == "PASSED", output
    assert outcome(output, "test_fails") == "FAILED", output
    assert "FAILED test_plain.py::test_fails - AssertionError('arithmetic" in output, "the error itself, unwrapped"
    assert "TestHung" not in output
