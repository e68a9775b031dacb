"""Private dockerd and containerd instances: own root, state, unix socket; no network setup.

Each is a context manager yielding the client wrapper; on exit the daemon is stopped by PID and
its temp dir (under /tmp, short enough for unix socket paths) unmounted and removed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .clients import Containerd, Docker
from .tools import Daemon, remove_tree, require_binary, short_tempdir

CONTAINERD_CONFIG = """\
version = 2
root = "{tmp}/root"
state = "{tmp}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{tmp}/containerd.sock"

[ttrpc]
  address = "{tmp}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{tmp}/opt"
"""


def _docker_pings(socket: Path) -> bool:
    if not socket.is_socket():
        return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as client:
            return client.get("http://docker/_ping").text == "OK"
    except httpx.HTTPError:
        return False


def docker_client_binary() -> str:
    """The CLI from Debian's docker.io (/usr/bin/docker), matching its dockerd's API version.

    Another docker CLI may come earlier on PATH (here: a Docker 28 client in /usr/local/bin).
    """
    packaged = Path("/usr/bin/docker")
    return str(packaged) if packaged.exists() else require_binary("docker", "docker.io")


@contextmanager
def running_dockerd(log_dir: Path) -> Iterator[Docker]:
    """``dockerd`` with its own data-root, exec-root, socket and pidfile, and no bridge/iptables."""
    dockerd = require_binary("dockerd", "docker.io", root=True)
    client = docker_client_binary()
    tmp = short_tempdir("dockerd")
    daemon = None
    try:
        (tmp / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        (tmp / "client").mkdir()
        socket = tmp / "docker.sock"
        argv = [dockerd, "--data-root", str(tmp / "data"), "--exec-root", str(tmp / "exec"),
                "-H", f"unix://{socket}", "--pidfile", str(tmp / "docker.pid"),
                "--config-file", str(tmp / "daemon.json"),
                "--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
        daemon = Daemon.start("dockerd", argv, log_dir / "dockerd.log")
        daemon.wait_until(lambda: _docker_pings(socket), f"GET /_ping on {socket}")
        yield Docker(client, socket, tmp / "client", daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        remove_tree(tmp)


def _containerd_answers(ctr: str, socket: Path) -> bool:
    if not socket.is_socket():
        return False
    probe = subprocess.run([ctr, "--address", str(socket), "version"], capture_output=True,
                           check=False, timeout=30)
    return probe.returncode == 0


@contextmanager
def running_containerd(log_dir: Path) -> Iterator[Containerd]:
    """``containerd`` with a version 2 config: temp root/state, own socket, CRI disabled."""
    containerd = require_binary("containerd", "containerd", root=True)
    ctr = shutil.which("ctr") or require_binary("ctr", "containerd")
    tmp = short_tempdir("containerd")
    daemon = None
    try:
        config = tmp / "config.toml"
        config.write_text(CONTAINERD_CONFIG.format(tmp=tmp))
        socket = tmp / "containerd.sock"
        daemon = Daemon.start("containerd", [containerd, "--config", str(config)],
                              log_dir / "containerd.log")
        daemon.wait_until(lambda: _containerd_answers(ctr, socket), f"ctr version on {socket}")
        yield Containerd(ctr, socket, daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        remove_tree(tmp)
