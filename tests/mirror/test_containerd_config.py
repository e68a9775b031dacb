"""``swarmreg containerd-config``: the hosts.toml files it writes, its backups and ``--restore``.

The files are parsed back with tomllib; that containerd itself reads them the same way is
tests/clients/test_containerd_mirror.py (a real containerd and ctr).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from swarmreg.cli import main

AGENT = "http://127.0.0.1:5001"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["containerd-config", *args])
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file (bytes and mode) and directory under root, for before/after comparisons."""
    found: dict[str, tuple[bytes, int] | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name] = None if path.is_dir() else (path.read_bytes(), path.stat().st_mode)
    return found


def hosts(directory: Path, host: str) -> dict[str, object]:
    with open(directory / host / "hosts.toml", "rb") as file:
        return tomllib.load(file)


def test_each_registry_gets_its_upstream_as_server_and_the_agent_as_pull_resolve_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--agent", AGENT + "/", "--dir", str(tmp_path), "--registry", "ghcr.io",
                         "--registry", "docker.io", "--registry", "127.0.0.1:5000",
                         "--registry", "http://registry.lan:8080", "--registry", "localhost:5000")
    assert status == 0
    agent_host = {AGENT: {"capabilities": ["pull", "resolve"]}}
    assert hosts(tmp_path, "ghcr.io") == {"server": "https://ghcr.io", "host": agent_host}
    assert hosts(tmp_path, "docker.io") == {"server": "https://registry-1.docker.io", "host": agent_host}
    # A loopback registry is plain http, as containerd assumes for it; an explicit scheme is kept.
    assert hosts(tmp_path, "127.0.0.1:5000") == {"server": "http://127.0.0.1:5000", "host": agent_host}
    assert hosts(tmp_path, "registry.lan:8080") == {"server": "http://registry.lan:8080", "host": agent_host}
    assert hosts(tmp_path, "localhost:5000")["server"] == "http://localhost:5000"
    assert '[plugins."io.containerd.grpc.v1.cri".registry]\n' in out
    assert f"  config_path = \"{tmp_path}\"\n" in out
    assert '[plugins."io.containerd.cri.v1.images".registry]' in out


def test_without_registry_it_writes_default_for_every_registry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--agent", "https://agent.lan:5443", "--dir", str(tmp_path / "certs.d"))[0] == 0
    assert hosts(tmp_path / "certs.d", "_default") == {
        "host": {"https://agent.lan:5443": {"capabilities": ["pull", "resolve"]}}}  # no server: the registry's own


def test_backup_and_restore_round_trip_byte_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "docker.io").mkdir()
    original = b'server = "https://mirror.example"\n\n[host."https://x"]\n  capabilities = ["pull"]\r\n'
    (tmp_path / "docker.io" / "hosts.toml").write_bytes(original)
    os.chmod(tmp_path / "docker.io" / "hosts.toml", 0o600)
    (tmp_path / "quay.io").mkdir()
    (tmp_path / "quay.io" / "ca.crt").write_bytes(b"someone's CA")
    before = snapshot(tmp_path)

    args = ("--agent", AGENT, "--dir", str(tmp_path), "--registry", "docker.io", "--registry", "quay.io",
            "--registry", "ghcr.io")
    assert run(capsys, *args)[0] == 0
    assert hosts(tmp_path, "docker.io")["server"] == "https://registry-1.docker.io"
    backup = tmp_path / "docker.io" / "hosts.toml.swarmreg-backup"
    assert backup.read_bytes() == original and backup.stat().st_mode & 0o777 == 0o600
    written = snapshot(tmp_path)
    assert run(capsys, *args)[0] == 0  # again: the same files, and the backup still the original
    assert snapshot(tmp_path) == written

    status, _, err = run(capsys, "--restore", "--dir", str(tmp_path))
    assert status == 0 and "restored" in err and "removed" in err
    assert snapshot(tmp_path) == before
    assert run(capsys, "--restore", "--dir", str(tmp_path))[0] == 0  # nothing left to undo
    assert snapshot(tmp_path) == before


def test_a_later_run_adds_hosts_and_restore_undoes_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ghcr.io").mkdir()
    (tmp_path / "ghcr.io" / "hosts.toml").write_text('server = "https://ghcr.io"\n')
    before = snapshot(tmp_path)
    assert run(capsys, "--agent", AGENT, "--dir", str(tmp_path), "--registry", "ghcr.io")[0] == 0
    assert run(capsys, "--agent", "http://127.0.0.1:6001", "--dir", str(tmp_path), "--registry", "ghcr.io",
               "--registry", "docker.io")[0] == 0
    assert hosts(tmp_path, "ghcr.io")["host"] == {"http://127.0.0.1:6001": {"capabilities": ["pull", "resolve"]}}
    assert run(capsys, "--restore", "--dir", str(tmp_path))[0] == 0
    assert snapshot(tmp_path) == before


def test_restore_accepts_the_writing_command_and_can_undo_some_hosts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tmp_path)
    args = ("--agent", AGENT, "--dir", str(tmp_path), "--registry", "ghcr.io", "--registry", "quay.io")
    assert run(capsys, *args)[0] == 0
    assert run(capsys, "--dir", str(tmp_path), "--restore", "--registry", "quay.io")[0] == 0
    assert not (tmp_path / "quay.io").exists() and hosts(tmp_path, "ghcr.io")["server"] == "https://ghcr.io"
    assert run(capsys, *args, "--restore")[0] == 0  # the same command line plus --restore
    assert snapshot(tmp_path) == before


def test_a_replaced_symlink_comes_back_as_the_same_symlink(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "shared.toml").write_text('server = "https://ghcr.io"\n')
    (tmp_path / "ghcr.io").mkdir()
    (tmp_path / "ghcr.io" / "hosts.toml").symlink_to("../shared.toml")
    assert run(capsys, "--agent", AGENT, "--dir", str(tmp_path), "--registry", "ghcr.io")[0] == 0
    assert not (tmp_path / "ghcr.io" / "hosts.toml").is_symlink()
    assert (tmp_path / "shared.toml").read_text() == 'server = "https://ghcr.io"\n'  # the target is untouched
    assert run(capsys, "--dir", str(tmp_path), "--restore")[0] == 0
    assert os.readlink(tmp_path / "ghcr.io" / "hosts.toml") == "../shared.toml"
    assert sorted(p.name for p in (tmp_path / "ghcr.io").iterdir()) == ["hosts.toml"]


def test_a_dangling_symlink_is_backed_up_and_restored_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ghcr.io").mkdir()
    (tmp_path / "ghcr.io" / "hosts.toml").symlink_to("../elsewhere.toml")  # its target is not there (yet)
    assert run(capsys, "--agent", AGENT, "--dir", str(tmp_path), "--registry", "ghcr.io")[0] == 0
    assert run(capsys, "--dir", str(tmp_path), "--restore")[0] == 0
    assert os.readlink(tmp_path / "ghcr.io" / "hosts.toml") == "../elsewhere.toml"


@pytest.mark.parametrize(("args", "message"), [
    (("--agent", "ftp://127.0.0.1:5001"), "scheme must be http or https"),
    (("--agent", "127.0.0.1:5001"), "scheme must be http or https"),
    (("--agent", "http://"), "no host"),
    (("--agent", "http://127.0.0.1:5001/v2"), "only http[s]://HOST[:PORT]"),
    (("--agent", "http://user:pw@agent:5001"), "only http[s]://HOST[:PORT]"),
    (("--agent", "http://agent:99999"), "port 99999"),
    (("--agent", AGENT, "--registry", "ghcr.io/team"), "expected HOST or HOST:PORT"),
    (("--agent", AGENT, "--registry", "bad_host"), "not a host name"),
    (("--agent", AGENT, "--registry", "ghcr.io:0"), "port 0"),
    (("--agent", AGENT, "--registry", "ftp://ghcr.io"), "scheme must be http or https"),
    (("--agent", AGENT, "--registry", "../etc"), "expected HOST or HOST:PORT"),
    (("--agent", AGENT, "--registry", "_default"), "leave out --registry"),
    (("--agent", AGENT, "--registry", "[fffff::1]:5000"), "not an IPv6 address"),
    (("--registry", "ghcr.io"), "--agent URL is required"),
    (("--restore", "--registry", "../x"), "expected HOST or HOST:PORT"),
])
def test_bad_input_is_refused_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str) -> None:
    (tmp_path / "ghcr.io").mkdir()
    (tmp_path / "ghcr.io" / "hosts.toml").write_text("mine\n")
    before = snapshot(tmp_path)
    status, out, err = run(capsys, *args, "--dir", str(tmp_path), "--registry", "ghcr.io")
    assert status == 2 and out == ""
    assert err.startswith("swarmreg: ") and message in err
    assert snapshot(tmp_path) == before
