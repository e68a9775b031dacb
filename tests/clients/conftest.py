"""Fixtures for real-client tests: the reference registry, skopeo, dockerd, containerd, podman.

Each fixture skips (naming the Debian package) only when its binary is missing, and stops its
processes and removes its temp dirs at teardown even when the test failed. Daemon logs are kept
in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clients import Containerd, Docker, Podman, Skopeo, containers_env
from .daemons import running_containerd, running_dockerd
from .registry import reference_registry_at
from .tools import remove_tree, require_binary, short_tempdir


@pytest.fixture
def reference_registry(tmp_path: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:<port>``) of a fresh docker-registry with delete enabled."""
    with reference_registry_at(tmp_path) as url:
        yield url


@pytest.fixture
def skopeo() -> Iterator[Skopeo]:
    """skopeo with its own blob-info cache and config dirs (nothing shared between tests)."""
    binary = require_binary("skopeo", "skopeo")
    home = short_tempdir("skopeo")
    try:
        yield Skopeo(binary, home, containers_env(home))
    finally:
        remove_tree(home)


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[Docker]:
    """A private dockerd; the value is the callable docker CLI: ``await dockerd("pull", ref)``."""
    with running_dockerd(tmp_path) as docker:
        yield docker


@pytest.fixture
def docker(dockerd: Docker) -> Docker:
    """``await docker(*args)``: the docker CLI bound to the test's private dockerd."""
    return dockerd


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    """A private containerd; the value is the callable ctr: ``await containerd("images", "ls")``."""
    with running_containerd(tmp_path) as ctr:
        yield ctr


@pytest.fixture
def ctr(containerd: Containerd) -> Containerd:
    """``await ctr(*args)`` / ``await ctr.pull(ref, platform=...)`` against the private containerd."""
    return containerd


@pytest.fixture
def podman() -> Iterator[Podman]:
    """``await podman(*args)`` with --root/--runroot/--tmpdir in a temp dir, vfs storage."""
    binary = require_binary("podman", "podman")
    if os.geteuid() != 0:
        pytest.skip("podman with --root in a temp dir needs root here")
    root = short_tempdir("podman")
    try:
        yield Podman(binary, root, containers_env(root / "user"))
    finally:
        remove_tree(root)
