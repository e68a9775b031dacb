"""The swarmreg image, built once per test module from the repository's Containerfile on a
Debian base made with debootstrap, and a herd container the tests share."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.clients.tools import remove_tree, require_binary, short_tempdir
from tests.conftest import free_port

from .base_image import debian_rootfs
from .commands import commands  # noqa: F401  (a fixture: daemons run from deployment files)
from .podman import SECRET, Container, Podman, start

REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/swarmreg-base:test"
IMAGE = "localhost/swarmreg:test"
UID = 10001  # the Containerfile's USER
IMPORT_TIMEOUT = 300
BUILD_TIMEOUT = 600  # pip install from PyPI inside: about 20 s here


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    """podman (as root, state in a temp dir) with the cluster secret the image's config reads."""
    binary = require_binary("podman", "podman", root=True)
    require_binary("debootstrap", "debootstrap", root=True)
    root = short_tempdir("pkg")
    podman = Podman(binary, root)
    podman.secrets.mkdir()
    secret = podman.secrets / SECRET
    secret.write_text(os.urandom(24).hex() + "\n")
    # Readable by the image's user only, as a Kubernetes Secret with defaultMode 0440 and fsGroup.
    os.chown(secret, 0, UID)
    secret.chmod(0o440)
    try:
        podman("secret", "create", SECRET, str(secret))
        yield podman
    finally:
        podman("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        podman("volume", "prune", "--force", check=False)
        remove_tree(root)


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The Containerfile built on the debootstrap base (``--build-arg BASE=``)."""
    rootfs = debian_rootfs()
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        podman("import", "-", BASE, stdin=tar.stdout, timeout=IMPORT_TIMEOUT)
        assert tar.wait(timeout=IMPORT_TIMEOUT) == 0
    # --layers=false: one layer for the whole build, not one copy per step.
    podman("build", "--runtime", "runc", "--network", "host", "--layers=false", "--build-arg", f"BASE={BASE}",
           "-t", IMAGE, "-f", str(REPO / "Containerfile"), str(REPO), timeout=BUILD_TIMEOUT)
    return IMAGE


@attrs.frozen
class Herd:
    container: Container
    ready: dict[str, Any]

    def url(self, role: str) -> str:
        return f"http://{self.ready['roles'][role]['http']}"

    def address(self, role: str, port: str = "http") -> str:
        address: str = self.ready["roles"][role][port]
        return address


def herd_settings(*extra: str) -> list[str]:
    """``--set``s that put a herd's ports on free ports of 127.0.0.1."""
    keys = ("proxy.listen", "swarm.listen", "origin.listen", "tracker.listen", "index.listen")
    return [*(f"{key}=127.0.0.1:{free_port()}" for key in keys), *extra]


def start_herd(podman: Podman, image: str, name: str, *extra: str, volume: str | None = None,
               read_only: bool = True) -> Herd:
    container = start(podman, image, name, "origin,tracker,index,proxy", herd_settings(*extra), volume=volume,
                      read_only=read_only)
    return Herd(container, container.wait_ready())


@pytest.fixture(scope="module")
def herd(podman: Podman, image: str) -> Herd:
    """A herd container (origin, tracker, index and proxy) on the host network."""
    return start_herd(podman, image, "herd")
