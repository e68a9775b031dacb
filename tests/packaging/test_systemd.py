"""deploy/systemd as an operator installs it: systemd-analyze verifies each unit without a
warning and rates its hardening; systemd-sysusers makes the daemon's user from the sysusers.d
file; the example configs load with the daemon's own loader and agree with their units (state
directory, credential, stop deadline); and each unit's ExecStart, run as written (the binary and
the paths systemd would provide swapped for the test's), starts a herd and an agent that serve
a pull and stop within TimeoutStopSec on the unit's KillSignal.

systemd is not PID 1 here, so nothing is started through systemd itself: the hardening options
are checked by systemd-analyze, not exercised."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from swarmreg.cli import _parser
from swarmreg.config import Config, load_config
from swarmreg.daemon import stop_deadline
from swarmreg.devcluster import port_zero
from tests.clients.tools import require_binary
from tests.conftest import free_port

from .commands import DaemonCommand, pull_through
from .test_container import assert_healthy
from .units import CONFIG_DIR, INSTALLED_BINARY, SYSTEMD_DIR, Unit, unit

UNITS = {"swarmreg-herd.service": ("origin,tracker,index,proxy", "herd.toml"),
         "swarmreg-agent.service": ("agent", "agent.toml")}
SYSUSERS = SYSTEMD_DIR / "sysusers.d" / "swarmreg.conf"
START_TIMEOUT = 60


def installed_copy(source: Unit, directory: Path) -> Path:
    """The unit with ExecStart's binary swapped for this venv's swarmreg: verify checks that the
    binary exists, and the unit's /opt/swarmreg (the image's venv) is not installed here."""
    local = Path(sys.executable).with_name("swarmreg")
    assert local.exists(), local
    text = source.path.read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text
    copy = directory / source.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={local} "))
    return copy


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verifies_the_unit_without_a_warning(name: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    copy = installed_copy(unit(name), tmp_path)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values; it prints a warning naming the unit for each.
    assert done.returncode == 0, done.stderr
    assert name not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_rates_the_unit_ok(name: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    copy = installed_copy(unit(name), tmp_path)
    done = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(copy)],
                          capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert level, done.stdout + done.stderr
    # 0 is locked down, 10 unprotected; what is left is the network a registry needs (1.6 now).
    assert float(level[1]) < 2.0, done.stdout


# The options asked of every unit: a non-root user, no privilege, read-only system.
HARDENING = {
    "User": "swarmreg", "Group": "swarmreg", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
    "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
    "AmbientCapabilities": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "StateDirectory": "swarmreg", "ConfigurationDirectory": "swarmreg",
}


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_is_hardened(name: str) -> None:
    service = unit(name)
    for key, value in HARDENING.items():
        assert service.get(key) == value, key
    assert service.all("SystemCallFilter")[0] == "@system-service"
    assert int(service.get("LimitNOFILE")) >= 65536


def test_sysusers_makes_the_units_user(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    done = subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    for name in UNITS:
        service = unit(name)
        user = users[service.get("User")]
        assert 0 < int(user[2]) < 1000, user  # a system user
        assert user[5] == f"/var/lib/{service.get('StateDirectory')}" and user[6] == "/usr/sbin/nologin", user
    group = (tmp_path / "etc" / "group").read_text()
    assert re.search(rf"^{unit('swarmreg-herd.service').get('Group')}:x:\d+:", group, re.M), group


def config_path(argv: Sequence[str]) -> Path:
    """The repository file the unit's --config names, as ConfigurationDirectory holds it."""
    path = argv[argv.index("--config") + 1]
    assert path.startswith(CONFIG_DIR + "/"), path
    return SYSTEMD_DIR / Path(path).name


def credential(service: Unit, name: str) -> str:
    """Where systemd puts the credential ``name`` of LoadCredential= for this unit."""
    ids = [value.partition(":")[0] for value in service.all("LoadCredential")]
    assert name in ids, ids
    return f"/run/credentials/{service.name}/{name}"


@pytest.mark.parametrize("name", UNITS)
def test_execstart_and_config_agree_with_the_unit(name: str, tmp_path: Path) -> None:
    service = unit(name)
    roles, config_name = UNITS[name]
    argv = service.exec_start
    assert argv[0] == INSTALLED_BINARY
    # The daemon's own parser takes the command line (real flags, no typo).
    args = _parser().parse_args(argv[1:])
    assert (args.command, args.roles) == ("daemon", roles)
    path = config_path(argv)
    assert path.name == config_name
    # The secret is read where LoadCredential puts it (not here: a stand-in file is read instead).
    with open(path, "rb") as file:
        assert tomllib.load(file)["cluster"]["secret_file"] == credential(service, "cluster-secret")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = load_config(path, [f"cluster.secret_file={secret}"])  # the real loader: bad keys raise
    assert config.cluster.secret == "s3cret"
    # The data is in StateDirectory, the working directory too.
    assert config.data_dir == f"/var/lib/{service.get('StateDirectory')}" == service.get("WorkingDirectory")
    # systemd's SIGKILL comes only after the daemon's whole graceful stop, and not long after it.
    deadline = stop_deadline(config)
    assert deadline < service.seconds("TimeoutStopSec") <= deadline + 10
    assert service.get("KillSignal") in ("SIGTERM", "SIGINT")  # the daemon's graceful stop (daemon.py)
    assert service.get("KillMode") == "mixed"


def test_the_example_configs_are_checked_for_real(tmp_path: Path) -> None:
    """The loader refuses a mistyped key in them: the load above would catch a broken example."""
    bad = tmp_path / "agent.toml"
    bad.write_text((SYSTEMD_DIR / "agent.toml").read_text().replace("registry_listen", "registry_listn"))
    with pytest.raises(Exception, match="agent.registry_listn: unknown key"):
        load_config(bad)


def unit_command(service: Unit, state: Path, secret: Path, overrides: Sequence[str]) -> DaemonCommand:
    """The unit's ExecStart as systemd would run it: its arguments (the binary: this checkout),
    --config the repository's file (ConfigurationDirectory's), the working directory and the
    data in ``state`` (StateDirectory), the secret where LoadCredential would put it, the unit's
    Environment=; stopped with KillSignal within TimeoutStopSec."""
    argv = service.exec_start
    args = argv[1:]
    args[args.index("--config") + 1] = str(config_path(argv))
    env = dict(item.partition("=")[::2] for item in service.all("Environment"))
    return DaemonCommand(service.name, args, state, [f"cluster.secret_file={secret}", *overrides],
                         stop_signal=signal.Signals[service.get("KillSignal")],
                         stop_timeout=service.seconds("TimeoutStopSec"), env=env)


@pytest.mark.slow
async def test_the_units_commands_run_a_herd_and_agent_that_serve_a_pull_and_stop_in_time(
        tmp_path: Path, commands: list[DaemonCommand]) -> None:
    secret = tmp_path / "cluster-secret"
    secret.write_text(os.urandom(24).hex() + "\n")
    secret.chmod(0o600)
    # herd.toml's cluster.origins names the address agents reach the origin at: here, loopback.
    origin = f"127.0.0.1:{free_port()}"
    herd = unit_command(unit("swarmreg-herd.service"), tmp_path / "herd", secret, [
        *port_zero(["tracker", "index", "proxy"]), "swarm.listen=127.0.0.1:0", f"origin.listen={origin}",
        f'cluster.origins=["{origin}"]'])
    commands.append(herd)
    herd_ready = await herd.start()
    assert set(herd_ready["roles"]) == {"origin", "tracker", "index", "proxy"}
    await assert_healthy(herd_ready)

    roles = herd_ready["roles"]
    agent = unit_command(unit("swarmreg-agent.service"), tmp_path / "agent", secret, [
        *port_zero(["agent"]), f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}"])
    commands.append(agent)
    agent_ready = await agent.start()
    await assert_healthy(agent_ready)

    await pull_through(f"http://{roles['proxy']['http']}", f"http://{agent_ready['roles']['agent']['registry']}",
                       "test/systemd")

    for process in (agent, herd):
        elapsed, status = await process.stop()
        assert status == 0, process.log.read_text()
        deadline = stop_deadline(unit_config(unit(process.name)))
        assert elapsed < deadline, f"{process.name} stopped after {elapsed:.1f} s"
        assert "stopped" in process.log.read_text()


def unit_config(service: Unit) -> Config:
    return load_config(config_path(service.exec_start), ["cluster.secret_file="])
