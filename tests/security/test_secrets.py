"""Secrets in the configuration stay secret: ``config show`` and every repr redact them, our
launchers keep them off command lines, and ``cluster.secret_file`` reads one from a file."""

from __future__ import annotations

import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from swarmreg.config import Address, ConfigError, dump_config, load_config, secret_keys
from swarmreg.devcluster import DaemonProcess, split_secrets
from swarmreg.errors import BAD_GATEWAY, SwarmregError
from swarmreg.origin.client import OriginClient

SECRET = "a-cluster-secret-0123456789abcdef"
TOKEN_SECRET = "a-token-secret-fedcba9876543210"
HASH = "$scrypt$a-password-hash-0011223344"
SECRETS = (f'cluster.secret="{SECRET}"', f'proxy.token_secret="{TOKEN_SECRET}"', f'proxy.users={{alice="{HASH}"}}')


def test_every_secret_key_is_known() -> None:
    assert secret_keys() == {"cluster.secret", "proxy.token_secret", "proxy.users", "registries", "tracker.store",
                             "index.replicate"}


def test_config_show_redacts_every_secret() -> None:
    result = subprocess.run([sys.executable, "-m", "swarmreg", "config", "show",
                             *(arg for item in SECRETS for arg in ("--set", item))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for secret in (SECRET, TOKEN_SECRET, HASH):
        assert secret not in result.stdout
    shown = tomllib.loads(result.stdout)
    assert shown["cluster"]["secret"] == "<redacted>"
    assert shown["proxy"]["token_secret"] == "<redacted>"
    assert shown["proxy"]["users"] == {"alice": "<redacted>"}, "the user names stay, their hashes go"


def test_the_repr_of_a_config_hides_every_secret() -> None:
    config = load_config(None, SECRETS)
    for text in (repr(config), str(config), repr(config.proxy), repr(config.cluster)):
        for secret in (SECRET, TOKEN_SECRET, HASH):
            assert secret not in text
    assert "token_secret='<redacted>'" in repr(config.proxy)
    assert "secret=''" in repr(load_config().cluster), "an unset secret shows as unset"


def test_an_unredacted_dump_still_round_trips(tmp_path: Path) -> None:
    config = load_config(None, SECRETS, data_dir=str(tmp_path))
    path = tmp_path / "dump.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


# -- cluster.secret_file ----------------------------------------------------------------------

def test_the_secret_file_gives_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    path.write_text(SECRET + "\n")  # as `openssl rand -hex 32 > file` writes it
    config = load_config(None, [f'cluster.secret_file="{path}"'], data_dir=str(tmp_path))
    assert config.cluster.secret == SECRET
    dumped = tmp_path / "dump.toml"
    dumped.write_text(dump_config(config))
    assert SECRET not in dumped.read_text(), "the dump names the file, not its content"
    assert load_config(dumped) == config


@pytest.mark.parametrize(("write", "overrides", "message"), [
    (None, [], "cannot read"),
    ("  \n", [], "is empty"),
    (SECRET, ['cluster.secret="other"'], "not both"),
])
def test_a_bad_secret_file_is_refused(tmp_path: Path, write: str | None, overrides: list[str], message: str) -> None:
    path = tmp_path / "cluster.secret"
    if write is not None:
        path.write_text(write)
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(None, [f'cluster.secret_file="{path}"', *overrides])
    assert "cluster.secret" in str(refused.value)
    assert SECRET not in str(refused.value)


# -- our launchers keep secrets off the command line -------------------------------------------

def test_secret_overrides_are_told_apart() -> None:
    plain, hidden = split_secrets(["origin.listen=127.0.0.1:0", *SECRETS, 'proxy.users.bob="h"',
                                   f'cluster={{secret="{SECRET}"}}', "cluster.insecure=true"])
    assert plain == ["origin.listen=127.0.0.1:0", "cluster.insecure=true"]
    assert len(hidden) == 5


def test_the_launch_config_keeps_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "base.toml"
    config_file.write_text('[origin]\nmax_sessions = 7\n')
    process = DaemonProcess("n", ["origin"], tmp_path / "n", overrides=[*SECRETS, "origin.max_sessions=9"],
                            config_file=config_file)
    (tmp_path / "n").mkdir()
    process.write_launch_config()
    argv = " ".join(process.argv)
    assert str(config_file) not in argv and str(process.launch_config) in argv
    data = tomllib.loads(process.launch_config.read_text())
    assert data["origin"]["max_sessions"] == 7 and data["cluster"]["secret"] == SECRET
    loaded = load_config(process.launch_config, ["origin.max_sessions=9"])
    assert loaded.origin.max_sessions == 9 and loaded.proxy.token_secret == TOKEN_SECRET


async def test_a_spawned_daemon_has_its_secrets_off_its_command_line(spawn: Any, tmp_path: Path) -> None:
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], *SECRETS)
    assert herd.process is not None
    cmdline = Path(f"/proc/{herd.process.pid}/cmdline").read_bytes().decode()
    assert "--set" in cmdline
    for secret in (SECRET, TOKEN_SECRET, HASH):
        assert secret not in cmdline, "a secret is in the process list"
    assert stat.S_IMODE(herd.launch_config.stat().st_mode) == 0o600
    # The daemon got the secret all the same: the origin takes a write with it, refuses one without.
    address = Address.parse(herd.address("origin"))
    async with OriginClient(address, secret=SECRET) as origin:
        assert await origin.open_session("secrets/blobs")
    async with OriginClient(address) as anonymous:
        with pytest.raises(SwarmregError) as refused:
            await anonymous.open_session("secrets/blobs")
        # Our client reports the origin's 401 as its own misconfiguration (see http.client).
        assert refused.value.code is BAD_GATEWAY and refused.value.detail == {"upstream": "UNAUTHORIZED"}
