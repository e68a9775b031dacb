"""podman as root with its storage, run root and state in one temp dir, every command with a
timeout; and the swarmreg image's containers on the host network (free ports of 127.0.0.1).

overlay storage: vfs works too but copies the whole image (340 MB) for every container and every
build step, 9 s a container here instead of a fraction of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

# What `podman run` needs here (docs/design TESTING.md): runc, and limits it may set.
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
SECRET = "swarmreg-cluster-secret"  # the name the image's /etc/swarmreg/swarmreg.toml reads
DATA_DIR = "/var/lib/swarmreg"
READY_FILE = f"{DATA_DIR}/ready.json"


class PodmanFailed(AssertionError):
    """A podman command exited non-zero; the message carries its command line and output."""


@attrs.define
class Podman:
    binary: str
    root: Path
    env: dict[str, str] = attrs.field(init=False)
    # The cluster secret: a file SECRET here, and in podman's secret store under that name.
    secrets: Path = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # No registry to search for a short name: the base image is local, nothing is pulled.
        registries = self.root / "registries.conf"
        registries.write_text("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)}
        self.secrets = self.root / "secrets"

    def __call__(self, *args: str, timeout: float = 60, check: bool = True,
                 stdin: Any = None) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--root", str(self.root / "root"), "--runroot", str(self.root / "runroot"),
                "--tmpdir", str(self.root / "tmp"), "--storage-driver", "overlay", "--events-backend", "none",
                "--cgroup-manager", "cgroupfs", *args]
        done = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=timeout,
                              env=self.env, check=False)
        if check and done.returncode != 0:
            raise PodmanFailed(f"{' '.join(argv)} exited {done.returncode}\n"
                               f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
        return done

    async def run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The same, in a worker thread: the test's Trio run goes on meanwhile."""
        return await trio.to_thread.run_sync(partial(self, *args, timeout=timeout, check=check))

    def inspect(self, name: str, template: str) -> str:
        return self("inspect", "--format", template, name).stdout.strip()


@attrs.define
class Container:
    """A detached container of the swarmreg image, its data directory on a named volume."""

    podman: Podman
    name: str
    volume: str

    @property
    def data_dir(self) -> Path:
        """The volume's directory on the host."""
        return Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}", self.volume).stdout.strip())

    def running(self) -> bool:
        return self.podman.inspect(self.name, "{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.podman.inspect(self.name, "{{.State.ExitCode}}"))

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """The daemon's ready document (every bound address), once it wrote it."""
        ready = self.data_dir / Path(READY_FILE).name
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if not self.running():
                raise AssertionError(f"{self.name} exited {self.exit_code()} before it was ready:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.logs()}")
            time.sleep(0.1)
        document: dict[str, Any] = json.loads(ready.read_text())
        return document

    async def stop(self, grace: int) -> tuple[float, int]:
        """``podman stop -t grace`` (SIGTERM, SIGKILL after ``grace`` seconds): how long it took, and
        the container's exit code."""
        started = time.monotonic()
        await self.podman.run("stop", "-t", str(grace), self.name, timeout=grace + 30)
        return time.monotonic() - started, self.exit_code()


def start(podman: Podman, image: str, name: str, roles: str, settings: Sequence[str], *,
          volume: str | None = None, read_only: bool = True) -> Container:
    """``swarmreg daemon --roles roles`` in a container on the host network, with the image's
    configuration, the cluster secret, ``settings`` (``--set``s: its 127.0.0.1 ports) and its data
    directory on ``volume`` (default: a new volume named after the container).

    ``read_only``: a read-only root filesystem without podman's tmpfs mounts, so that a file written
    outside the data directory fails the daemon; the secret then comes in a directory mounted at
    /run/secrets, as Kubernetes mounts a Secret (podman's --secret needs a writable /run/secrets).
    Else it comes from podman's secret store."""
    volume = volume or f"{name}-data"
    isolation = (["--read-only", "--read-only-tmpfs=false", "-v", f"{podman.secrets}:/run/secrets:ro"] if read_only
                 else ["--secret", SECRET])
    podman("run", "-d", "--name", name, "--network", "host", *RUN_FLAGS, *isolation, "-v", f"{volume}:{DATA_DIR}",
           image, "daemon", "--roles", roles, "--config", "/etc/swarmreg/swarmreg.toml", "--ready-file", READY_FILE,
           *(arg for setting in settings for arg in ("--set", setting)))
    return Container(podman, name, volume)
