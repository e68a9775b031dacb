"""containerd's ``hosts.toml`` files naming a swarmreg agent as the mirror of some registries.

``swarmreg containerd-config --agent URL --dir DIR [--registry HOST ...]`` writes
``DIR/<host>/hosts.toml`` for each registry (``DIR/_default/hosts.toml`` without one), backs up
any file it replaces and records what it did in ``DIR/.swarmreg-mirror.json``, so that
``--restore`` puts the originals back byte for byte and removes what it created. Only the
standard library is used: this runs on a node before any daemon does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

DEFAULT_HOST = "_default"
DOCKER_HUB = "docker.io"
DOCKER_HUB_SERVER = "https://registry-1.docker.io"
HOSTS_FILE = "hosts.toml"
BACKUP_SUFFIX = ".swarmreg-backup"
STATE_FILE = ".swarmreg-mirror.json"
CAPABILITIES = ("pull", "resolve")
HEADER = "# Written by `swarmreg containerd-config`; `swarmreg containerd-config --restore` undoes it.\n"

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_HOSTPORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)(:(?P<port>[0-9]{1,5}))?")


class MirrorConfigError(ValueError):
    """An agent URL or registry host that cannot go into a hosts.toml; nothing was written."""


@attrs.frozen
class Registry:
    """One registry to mirror: its directory name under DIR and its ``server`` URL (None for _default)."""

    directory: str
    server: str | None


def _host_and_port(text: str, what: str) -> tuple[str, int | None]:
    match = _HOSTPORT.fullmatch(text)
    if match is None:
        raise MirrorConfigError(f"{what} {text!r}: expected HOST or HOST:PORT")
    host, port = match["host"], match["port"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise MirrorConfigError(f"{what} {text!r}: {host} is not an IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise MirrorConfigError(f"{what} {text!r}: {host!r} is not a host name or IPv4 address")
    if port is not None and not 0 < int(port) < 65536:
        raise MirrorConfigError(f"{what} {text!r}: port {port} is not between 1 and 65535")
    return host, int(port) if port is not None else None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_agent_url(text: str) -> str:
    """The agent's registry URL as a hosts.toml host key: ``http[s]://host[:port]``, no path."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise MirrorConfigError(f"agent URL {text!r}: the scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise MirrorConfigError(f"agent URL {text!r}: only http[s]://HOST[:PORT] (containerd adds /v2 itself)")
    if not parts.netloc:
        raise MirrorConfigError(f"agent URL {text!r}: no host")
    _host_and_port(parts.netloc, "agent URL host")
    return f"{parts.scheme}://{parts.netloc}"


def parse_registry(text: str) -> Registry:
    """A ``--registry`` value: ``HOST[:PORT]`` (as in image references) or ``http[s]://HOST[:PORT]``.

    The directory is the host as it appears in image references. ``server`` is the upstream:
    an explicit scheme is kept (containerd uses it literally); without one it is https, except
    for docker.io (``https://registry-1.docker.io``, as containerd's own default) and loopback
    hosts (``http``, which is what containerd itself assumes for localhost registries).
    """
    if text == DEFAULT_HOST:
        raise MirrorConfigError(f"registry {text!r}: leave out --registry to write {DEFAULT_HOST}/hosts.toml")
    scheme = None
    hostport = text
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise MirrorConfigError(f"registry {text!r}: the scheme must be http or https")
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise MirrorConfigError(f"registry {text!r}: only [http[s]://]HOST[:PORT]")
        scheme, hostport = parts.scheme, parts.netloc
    host, _ = _host_and_port(hostport, "registry")
    if scheme is None and hostport == DOCKER_HUB:
        return Registry(hostport, DOCKER_HUB_SERVER)
    if scheme is None:
        scheme = "http" if _is_loopback(host) else "https"
    return Registry(hostport, f"{scheme}://{hostport}")


def hosts_toml(agent: str, server: str | None) -> str:
    """The text of one hosts.toml: the upstream as ``server``, the agent as a pull/resolve host."""
    lines = [HEADER.rstrip("\n")]
    if server is not None:  # _default has none: containerd then falls back to the registry itself
        lines.append(f"server = {json.dumps(server)}")
    capabilities = ", ".join(json.dumps(c) for c in CAPABILITIES)
    lines += ["", f"[host.{json.dumps(agent)}]", f"  capabilities = [{capabilities}]", ""]
    return "\n".join(lines)


def containerd_config_lines(directory: Path) -> str:
    """What to add to containerd's config.toml (printed by the command)."""
    path = json.dumps(str(directory))
    return (
        "# Add to containerd's config.toml (version = 2) and restart containerd:\n"
        '[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f"  config_path = {path}\n"
        f'# (config version 3: [plugins."io.containerd.cri.v1.images".registry] config_path = {path})\n'
        f"# ctr reads the same files with: ctr image pull --hosts-dir {path} REF\n"
    )


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a temp file in its directory and a rename: never half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _load_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"hosts": {}}
    except (OSError, ValueError) as error:
        raise MirrorConfigError(f"{directory / STATE_FILE} is unreadable ({error}); remove it by hand") from None
    if not isinstance(state, dict) or not isinstance(state.get("hosts"), dict):
        raise MirrorConfigError(f"{directory / STATE_FILE} is not swarmreg's record; remove it by hand")
    return state


def _save_state(directory: Path, state: dict[str, Any]) -> None:
    _write_atomically(directory / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def _back_up(path: Path, backup: Path) -> None:
    """Copy ``path`` to ``backup`` atomically, as it is: a symlink stays a symlink, a file keeps its mode."""
    if path.is_symlink():
        temp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
        temp.unlink(missing_ok=True)
        os.symlink(os.readlink(path), temp)
        os.replace(temp, backup)
    else:
        _write_atomically(backup, path.read_bytes(), path.stat().st_mode & 0o7777)


def write_hosts(agent: str, directory: Path, registries: Sequence[str]) -> list[Path]:
    """Write the hosts.toml files; returns their paths. Validates everything before writing anything.

    A file that exists and is not ours is first copied to ``hosts.toml.swarmreg-backup``; the
    record (``.swarmreg-mirror.json``) is saved before the file is replaced, so an interrupted
    run can still be restored. Running again with the same arguments changes nothing.
    """
    agent_url = parse_agent_url(agent)
    targets = [parse_registry(r) for r in registries] or [Registry(DEFAULT_HOST, None)]
    directory.mkdir(parents=True, exist_ok=True)
    state = _load_state(directory)
    written = []
    for target in dict.fromkeys(targets):  # a host given twice is written once
        host_dir = directory / target.directory
        path = host_dir / HOSTS_FILE
        record = state["hosts"].get(target.directory)
        if record is None:
            # lexists: a dangling symlink is there too, and must be backed up to be restored.
            record = {"created_dir": not host_dir.exists(), "backup": os.path.lexists(path)}
            host_dir.mkdir(exist_ok=True)
            if record["backup"]:
                _back_up(path, path.with_name(HOSTS_FILE + BACKUP_SUFFIX))
            state["hosts"][target.directory] = record
            _save_state(directory, state)
        _write_atomically(path, hosts_toml(agent_url, target.server).encode())
        written.append(path)
    return written


def restore_hosts(directory: Path, registries: Sequence[str] = ()) -> list[tuple[Path, str]]:
    """Undo earlier runs on ``directory``: originals back, our files and dirs gone; idempotent.

    With ``registries``, only those hosts are undone; without, every one. Returns each file
    handled with what was done to it ("restored" or "removed").
    """
    only = {parse_registry(r).directory for r in registries}
    state = _load_state(directory)
    touched = []
    for name, record in sorted(state["hosts"].items()):
        if only and name not in only:
            continue
        host_dir = directory / name
        path = host_dir / HOSTS_FILE
        backup = path.with_name(HOSTS_FILE + BACKUP_SUFFIX)
        if record.get("backup") and os.path.lexists(backup):
            os.replace(backup, path)  # the original's bytes and mode, atomically
            touched.append((path, "restored"))
        else:
            path.unlink(missing_ok=True)
            if record.get("created_dir"):
                try:
                    host_dir.rmdir()
                except OSError:  # someone put other files there: they stay
                    pass
            touched.append((path, "removed"))
        del state["hosts"][name]
        if state["hosts"]:
            _save_state(directory, state)
    if not state["hosts"]:
        (directory / STATE_FILE).unlink(missing_ok=True)
    return touched
