"""Daemons as child processes: the devcluster, and the harness tests and netsim use."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import attrs
import tomli_w
import trio

from swarmreg.config import ConfigError, apply_overrides, load_config, secret_keys
from swarmreg.logs import setup_logging

# The configuration a daemon is started with when it is given secrets: mode 0600 in its data
# directory, so that they stay off its command line (which any user of the host can read).
LAUNCH_CONFIG = "launch-config.toml"


def split_secrets(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``overrides`` split into those that set no secret and those that do (``cluster.secret``,
    ``proxy.token_secret``, ``proxy.users`` or a key under it, or a table holding one of them)."""
    keys = secret_keys()
    plain: list[str] = []
    hidden: list[str] = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        secret = any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)
        (hidden if secret else plain).append(item)
    return plain, hidden


class DaemonStartError(Exception):
    """A daemon process exited or stalled before it reported ready."""


class DaemonProcess:
    """``swarmreg daemon`` in a child process, ready once it has written its ready file."""

    def __init__(
        self,
        name: str,
        roles: Sequence[str],
        data_dir: str | os.PathLike[str],
        *,
        overrides: Sequence[str] = (),
        config_file: str | os.PathLike[str] | None = None,
        stderr: BinaryIO | int | None = None,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.roles = tuple(roles)
        self.data_dir = Path(data_dir)
        self.ready_file = self.data_dir / "ready.json"
        self.overrides = tuple(overrides)
        self.config_file = config_file
        self.stderr = stderr
        self.env = env
        self.wrapper = tuple(wrapper)  # an argv prefix, such as ``ip netns exec NAME``
        self.process: trio.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def launch_config(self) -> Path:
        """The 0600 file that carries the secret overrides (and the config file's content)."""
        return self.data_dir / LAUNCH_CONFIG

    @property
    def argv(self) -> list[str]:
        """The command line; overrides that set a secret are not on it (see ``write_launch_config``)."""
        plain, hidden = split_secrets(self.overrides)
        config_file = self.launch_config if hidden else self.config_file
        argv = [*self.wrapper, sys.executable, "-m", "swarmreg", "daemon", "--roles", ",".join(self.roles),
                "--data-dir", str(self.data_dir), "--ready-file", str(self.ready_file)]
        if config_file is not None:
            argv += ["--config", str(config_file)]
        for item in plain:
            argv += ["--set", item]
        return argv

    def write_launch_config(self) -> None:
        """Write the config file (if any) with the secret overrides applied into ``launch_config``,
        created with mode 0600; nothing if no override sets a secret."""
        hidden = split_secrets(self.overrides)[1]
        if not hidden:
            return
        data: dict[str, Any] = {}
        if self.config_file is not None:
            with open(self.config_file, "rb") as file:
                data = tomllib.load(file)
        apply_overrides(data, hidden)
        self.launch_config.unlink(missing_ok=True)  # O_EXCL below: a new file, never one left readable
        fd = os.open(self.launch_config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(tomli_w.dumps(data))

    async def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start the process and wait for its ready document (every bound address)."""
        await self.spawn()
        return await self.wait_ready(timeout)

    async def spawn(self) -> trio.Process:
        """Start the process without waiting for it to be ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        self.write_launch_config()
        self.process = await trio.lowlevel.open_process(
            self.argv, stdin=subprocess.DEVNULL, stderr=self.stderr,
            env=None if self.env is None else {**os.environ, **self.env})
        return self.process

    async def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the ready file; raises DaemonStartError if the process exits or stalls first."""
        assert self.process is not None, "spawn() first"
        with trio.move_on_after(timeout):
            while self.process.poll() is None:
                if self.ready_file.exists():
                    self.ready = json.loads(self.ready_file.read_text())
                    return self.ready
                await trio.sleep(0.05)
        if self.process.poll() is None:
            self.kill()
            raise DaemonStartError(f"{self.name}: not ready after {timeout:g} s")
        raise DaemonStartError(f"{self.name}: exited with status {self.process.returncode} before it was ready")

    def address(self, role: str, port: str = "http") -> str:
        """``host:port`` that ``role`` bound for ``port`` (from the ready document)."""
        address: str = self.ready["roles"][role][port]
        return address

    def url(self, role: str, port: str = "http") -> str:
        return f"http://{self.address(role, port)}"

    def send_signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if the process has not exited after ``timeout``; returns its status."""
        if self.process is None:
            return 0
        self.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            return await self.process.wait()
        self.kill()
        return await self.process.wait()


# The settings each role listens on; the agent and the origin also serve the peer wire.
LISTEN_SETTINGS = {
    "origin": ("origin.listen", "swarm.listen"),
    "tracker": ("tracker.listen",),
    "index": ("index.listen",),
    "proxy": ("proxy.listen",),
    "agent": ("agent.listen", "agent.registry_listen", "swarm.listen"),
}


def port_zero(roles: Iterable[str] = tuple(LISTEN_SETTINGS), host: str = "127.0.0.1") -> tuple[str, ...]:
    """``--set`` overrides that put every listener of ``roles`` on a free port of ``host`` (tests,
    benchmarks and netsim run many daemons side by side)."""
    keys = dict.fromkeys(key for role in roles for key in LISTEN_SETTINGS[role])
    return tuple(f"{key}={host}:0" for key in keys)


@attrs.frozen
class NodeSpec:
    """One devcluster daemon: its name, roles, and ``--set`` overrides (its ports)."""

    name: str
    roles: tuple[str, ...]
    overrides: tuple[str, ...]
    endpoints: tuple[tuple[str, str, str], ...]  # (what, role, port) shown in the endpoint table


# Kraken's devcluster, as its codelab walks through it: a herd and two agents, on Kraken's ports
# (Kraken's herd also runs testfs, a storage backend for tests; the origin's filesystem backend
# stands in for it).
DEVCLUSTER = (
    NodeSpec("herd", ("origin", "tracker", "index", "proxy"),
             ("proxy.listen=127.0.0.1:15000", "swarm.listen=127.0.0.1:15001", "origin.listen=127.0.0.1:15002",
              "tracker.listen=127.0.0.1:15003", "index.listen=127.0.0.1:15004",
              # No users, so every request is anonymous (as before: anyone on loopback may push and
              # delete); the rule adds the admin API (swarmreg list, prune, gc) for them too.
              'proxy.access=[{user = "anonymous", repositories = ".*", '
              'actions = ["pull", "push", "delete", "admin"]}]'),
             (("proxy: docker push (registry API)", "proxy", "http"),
              ("origin: blob uploads (Kraken API)", "origin", "http"),
              ("tracker: announce channel", "tracker", "ws"),
              ("index: tags and manifests", "index", "http"))),
    NodeSpec("agent-one", ("agent",),
             ("agent.registry_listen=127.0.0.1:16000", "swarm.listen=127.0.0.1:16001",
              "agent.listen=127.0.0.1:16002", "agent.tracker=127.0.0.1:15003", "agent.index=127.0.0.1:15004"),
             (("agent one: docker pull (registry API)", "agent", "registry"),
              ("agent one: blob downloads", "agent", "http"))),
    NodeSpec("agent-two", ("agent",),
             ("agent.registry_listen=127.0.0.1:17000", "swarm.listen=127.0.0.1:17001",
              "agent.listen=127.0.0.1:17002", "agent.tracker=127.0.0.1:15003", "agent.index=127.0.0.1:15004"),
             (("agent two: docker pull (registry API)", "agent", "registry"),
              ("agent two: blob downloads", "agent", "http"))),
)


async def relay_lines(name: str, stream: trio.abc.ReceiveStream) -> None:
    """Copy a child's log lines to our stderr, each prefixed with the node's name."""
    buffer = b""
    async for data in stream:
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            sys.stderr.write(f"[{name}] {line.decode(errors='replace')}\n")
    if buffer:
        sys.stderr.write(f"[{name}] {buffer.decode(errors='replace')}\n")


def tls_overrides(certs: Path, name: str) -> tuple[str, ...]:
    """``--set`` overrides that put a node on the cluster's mutual TLS with ``certs/name.pem``."""
    return (f'tls.ca="{certs / "ca.pem"}"', f'tls.cert="{certs / f"{name}.pem"}"',
            f'tls.key="{certs / f"{name}.key"}"', f'tls.peer_cert="{certs / f"{name}-peer.pem"}"',
            f'tls.peer_key="{certs / f"{name}-peer.key"}"')


def dev_roles(name: str) -> tuple[str, ...]:
    """The roles of a node named as the devcluster names them: the herd's, an agent's, else none."""
    if name == "herd":
        return DEVCLUSTER[0].roles
    return ("agent",) if name.startswith("agent") else ()


def make_dev_certs(certs: Path, names: Sequence[str] | Mapping[str, Sequence[str]]) -> None:
    """A dev CA and a certificate per node in ``certs``, keeping those already there with the
    same roles; ``names`` maps each node to its roles (a plain list: ``dev_roles`` of each name)."""
    from swarmreg.tls.certs import cert_roles
    from swarmreg.tls.cli import ca_paths, init_ca, issue_node, node_paths

    if not ca_paths(certs)[0].exists():
        init_ca(certs)
    wanted = names if isinstance(names, Mapping) else {name: dev_roles(name) for name in names}
    for name, roles in wanted.items():
        path = node_paths(certs, name)[0]
        if not path.exists() or cert_roles(path.read_bytes()) != frozenset(roles):
            issue_node(certs, name, [], force=True, roles=roles)


def upstream_registry(url: str) -> dict[str, str]:
    """``--upstream URL`` as a ``[[registries]]`` entry: its name is the URL's ``host:port``, its
    scheme the URL's; ValueError for anything else (a path, a query, another scheme)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"--upstream {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    return {"name": parts.netloc.lower(), "scheme": parts.scheme}


def upstream_overrides(urls: Sequence[str]) -> tuple[str, ...]:
    """The ``--set`` overrides that make a herd pull through to each of ``urls``."""
    if not urls:
        return ()
    entries = ", ".join("{" + ", ".join(f'{key} = "{value}"' for key, value in upstream_registry(url).items()) + "}"
                        for url in urls)
    return (f"registries=[{entries}]", *default_registry_overrides(urls))


def default_registry_overrides(urls: Sequence[str]) -> tuple[str, ...]:
    """The first upstream serves bare names that swarmreg itself lacks, on the agents and the
    proxy: mirrors that send no ``?ns=`` (docker's registry-mirrors, podman's and skopeo's
    registries.conf mirrors) then reach it too."""
    return (f'default_registry="{upstream_registry(urls[0])["name"]}"',) if urls else ()


def node_overrides(certs: Path | None, upstreams: Sequence[str], herd: Sequence[str] = (),
                   agents: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each devcluster node's ``--set`` overrides: its ports, TLS (with ``certs``), pulling through
    to ``upstreams``, and last (so they win) the user's ``herd`` and ``agents`` settings."""
    # The herd pulls through: its index resolves upstream tags, its origin fetches their blobs.
    extra = {spec.name: default_registry_overrides(upstreams) for spec in DEVCLUSTER}
    extra["herd"] = upstream_overrides(upstreams)
    return {spec.name: [*spec.overrides, *(tls_overrides(certs, spec.name) if certs is not None else ()),
                        *extra[spec.name], *(herd if spec.name == "herd" else agents)]
            for spec in DEVCLUSTER}


def check_settings(option: str, settings: Sequence[str]) -> None:
    """ConfigError (naming ``option``) unless every ``KEY=VALUE`` of ``settings`` is a valid ``--set``."""
    try:
        load_config(None, settings)
    except ConfigError as error:
        raise ConfigError(f"{option}: {error}") from None


async def _devcluster(data_dir: Path, tls: bool, upstreams: Sequence[str], herd: Sequence[str],
                      agents: Sequence[str]) -> None:
    certs = data_dir / "certs"
    if tls:
        make_dev_certs(certs, {spec.name: spec.roles for spec in DEVCLUSTER})
    overrides = node_overrides(certs if tls else None, upstreams, herd, agents)
    nodes = [DaemonProcess(spec.name, spec.roles, data_dir / spec.name, overrides=overrides[spec.name],
                           stderr=subprocess.PIPE) for spec in DEVCLUSTER]
    async with trio.open_nursery() as nursery:
        try:
            for node in nodes:
                process = await node.spawn()
                assert process.stderr is not None  # stderr=PIPE
                nursery.start_soon(relay_lines, node.name, process.stderr)
                await node.wait_ready()
            print_table(endpoint_rows(DEVCLUSTER, nodes, tls), data_dir, tls, upstreams)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            print("\nstopping the devcluster ...", file=sys.stderr)
        finally:
            with trio.CancelScope(shield=True):
                for node in reversed(nodes):
                    await node.stop()


def _scheme(role: str, port: str, tls: bool) -> str:
    # Cluster TLS covers the channels between nodes; the registry and blob ports are edges.
    secure = tls and role in ("origin", "index", "tracker")
    return ("wss" if secure else "ws") if port == "ws" else ("https" if secure else "http")


def endpoint_rows(specs: Sequence[NodeSpec], nodes: Sequence[DaemonProcess], tls: bool) -> list[tuple[str, str, str]]:
    """The endpoint table's rows (what, node, URL) of ready ``nodes``, started from ``specs``."""
    rows = [(what, node.name, f"{_scheme(role, port, tls)}://{node.address(role, port)}")
            for spec, node in zip(specs, nodes, strict=True) for what, role, port in spec.endpoints]
    rows += [(f"{node.name}: peer wire (BitTorrent)", node.name, f"tcp://{node.ready['peer']}")
             for node in nodes if "peer" in node.ready]
    return rows


def print_table(rows: Sequence[tuple[str, str, str]], data_dir: Path, tls: bool, upstreams: Sequence[str],
                extra: Sequence[str] = ()) -> None:
    """Print that the devcluster is up, its endpoint table, and ``extra`` lines."""
    width = max(len(what) for what, _, _ in rows)
    names = max(len(node) for _, node, _ in rows)
    print(f"\nswarmreg devcluster is up (data in {data_dir}); Ctrl-C stops it.\n")
    if tls:
        print(f"  mutual TLS between nodes: CA and node certificates in {data_dir / 'certs'}\n")
    for what, node, url in rows:
        print(f"  {what:<{width}}  {node:<{names}} {url}")
    for url in upstreams:
        print(f"\n  pulling through to {url}: its <repo>:<tag> is {upstream_registry(url)['name']}/<repo>:<tag> "
              "on the agents (?ns= or in the path)")
    if upstreams:
        print(f"  bare names swarmreg lacks come from {upstream_registry(upstreams[0])['name']} (default_registry)")
    for line in extra:
        print(f"\n{line}")
    print(flush=True)


def run_devcluster(data_dir: str | None, *, tls: bool = False, upstreams: Sequence[str] = (),
                   herd: Sequence[str] = (), agents: Sequence[str] = ()) -> int:
    """Run the devcluster in the foreground until Ctrl-C; returns the exit status. The herd pulls
    through to each of ``upstreams`` (registry URLs); ``herd`` and ``agents`` are ``--set``
    settings for the herd and for every agent (``--set-herd``, ``--set-agents``)."""
    setup_logging()
    try:
        upstream_overrides(upstreams)
        check_settings("--set-herd", herd)
        check_settings("--set-agents", agents)
    except (ValueError, ConfigError) as bad:
        print(f"swarmreg devcluster: {bad}", file=sys.stderr)
        return 2
    return run_in_data_dir(data_dir, lambda root: _devcluster(root, tls, upstreams, herd, agents))


def run_in_data_dir(data_dir: str | None, main: Callable[[Path], Awaitable[object]],
                    errors: tuple[type[Exception], ...] = (DaemonStartError,)) -> int:
    """``trio.run`` a devcluster's ``main`` on its data directory (a new temporary one when None,
    removed afterwards); the exit status: 1 after one of ``errors`` (a start that failed,
    printed), else 0."""
    temporary = data_dir is None
    root = Path(data_dir or tempfile.mkdtemp(prefix="swarmreg-devcluster-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        trio.run(main, root)
    except* errors as group:
        for error in group.exceptions:
            print(f"swarmreg devcluster: {error}", file=sys.stderr)
        status = 1
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return status
