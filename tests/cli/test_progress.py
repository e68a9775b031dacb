"""The transfers' progress: rich's bar (percentage, bytes, rate, time left) when standard error is
a terminal (a real pseudo-terminal here), plain periodic lines when it is not."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import trio

from tests.cli.helpers import NS, Relay, start_agent, start_herd, swarmreg, under_pty
from tests.conftest import random_bytes

MiB = 1 << 20
BAR = "\u2501"  # rich's bar is drawn with this box character


async def test_a_bar_on_a_terminal(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    relay = Relay(herd.url("origin").removeprefix("http://"), rate=8 * MiB)  # about 2 s: the bar refreshes
    await nursery.start(relay.run)
    data = random_bytes(16 * MiB, seed=8)
    source = tmp_path / "layer.bin"
    source.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    status, shown = await under_pty(tmp_path, "blob", "push", str(source), "--origin", f"http://{relay.address}",
                                    "--namespace", NS)
    assert status == 0, shown
    assert BAR in shown and "\x1b[" in shown, "drawn with rich's bar and terminal codes"
    assert re.search(r"push [0-9a-f]{12}.*\d+%.*MiB/s", shown), shown
    assert "100%" in shown and "16.0/16.0 MiB" in shown
    assert re.search(r"\d+:\d\d:\d\d", shown), "the time left"

    target = tmp_path / "back.bin"
    status, shown = await under_pty(tmp_path, "blob", "pull", digest, "--agent", agent.url("agent"),
                                    "--namespace", NS, "-o", str(target))
    assert status == 0, shown
    assert BAR in shown and re.search(r"pull [0-9a-f]{12}.*100%", shown), shown
    assert target.read_bytes() == data


async def test_plain_lines_without_a_terminal(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    relay = Relay(herd.url("origin").removeprefix("http://"), rate=3 * MiB)  # 6 s: one line on the way
    await nursery.start(relay.run)
    source = tmp_path / "layer.bin"
    source.write_bytes(random_bytes(18 * MiB, seed=9))
    done = await swarmreg(tmp_path, "blob", "push", str(source), "--origin", f"http://{relay.address}",
                          "--namespace", NS)
    assert done.returncode == 0, done.stderr.decode()
    stderr = done.stderr.decode()
    assert "\x1b" not in stderr and BAR not in stderr, "no terminal codes in a log"
    lines = re.findall(r"^push [0-9a-f]{12}: ([\d.]+ \w+) / 18\.0 MiB \((\d+)%\), [\d.]+ \w+/s$", stderr, re.M)
    assert len(lines) >= 2, stderr
    assert int(lines[0][1]) < 100 and lines[-1] == ("18.0 MiB", "100"), lines
    assert re.search(r"^hash layer\.bin: 18\.0 MiB / 18\.0 MiB \(100%\)", stderr, re.M), stderr
