"""``swarmreg blob push`` into an origin and ``swarmreg blob pull`` back through an agent, as an
operator runs them: child processes against real daemons."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from tests.cli.helpers import NS, start_agent, start_herd, swarmreg
from tests.conftest import blob_files, random_bytes


async def test_push_a_file_and_pull_it_back_through_an_agent(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(12 << 20, seed=1)
    source = tmp_path / "layer.bin"
    source.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    pushed = await swarmreg(tmp_path, "blob", "push", str(source), "--origin", herd.url("origin"), "--namespace", NS)
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert pushed.stdout.decode() == digest + "\n"
    assert blob_files(Path(herd.config.data_dir))[digest[7:]] == len(data)
    assert not list((tmp_path / "state" / "swarmreg" / "pushes").iterdir()), "the record goes once committed"

    again = await swarmreg(tmp_path, "blob", "push", str(source), "--origin", herd.url("origin"), "--namespace", NS)
    assert again.returncode == 0 and again.stdout.decode() == digest + "\n"
    assert "already has" in again.stderr.decode() and "nothing uploaded" in again.stderr.decode()

    target = tmp_path / "out" / "layer.bin"
    target.parent.mkdir()
    pulled = await swarmreg(tmp_path, "blob", "pull", digest, "--agent", agent.url("agent"), "--namespace", NS,
                            "-o", str(target))
    assert pulled.returncode == 0, pulled.stderr.decode()
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["layer.bin"], "no part left"

    to_stdout = await swarmreg(tmp_path, "blob", "pull", digest, "--agent", agent.url("agent"), "--namespace", NS)
    assert to_stdout.returncode == 0 and to_stdout.stdout == data
