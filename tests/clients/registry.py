"""The reference registry: Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx

from .tools import Daemon, remove_tree, require_binary, short_tempdir

CONFIG = """\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: swarmreg-tests
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def reference_registry_at(log_dir: Path, name: str = "docker-registry") -> Iterator[str]:
    """Run ``docker-registry serve`` on a free 127.0.0.1 port with a temp root (delete enabled).

    Yields the base URL once ``/v2/`` answers 200; stops the process and removes the root on exit.
    The log is ``log_dir/<name>.log``. Skips the test if docker-registry is not installed.
    """
    binary = require_binary("docker-registry", "docker-registry")
    root = short_tempdir("registry")
    daemon = None
    try:
        for _attempt in range(5):  # the free port may be taken between probe and bind
            port = _free_port()
            config = root / "config.yml"
            config.write_text(CONFIG.format(root=root / "data", port=port))
            daemon = Daemon.start(name, [binary, "serve", str(config)], log_dir / f"{name}.log")
            url = f"http://127.0.0.1:{port}"
            try:
                daemon.wait_until(partial(_answers, url), f"GET {url}/v2/ answers 200")
                break
            except RuntimeError:
                if "address already in use" not in daemon.log.read_text(errors="replace"):
                    raise
        else:
            raise RuntimeError("docker-registry found no free port")
        yield url
    finally:
        if daemon is not None:
            daemon.stop()
        remove_tree(root)
