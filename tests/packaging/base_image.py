"""A Debian base image for the Containerfile, made with debootstrap: no container registry is
reachable here, Debian's mirror is.

The root filesystem is cached under SWARMREG_TEST_CACHE (default /var/cache/swarmreg-tests), keyed
by the suite, the mirror and the package list, so that a CI run pays the minute debootstrap takes
once and local reruns reuse it. A lock file keeps two test runs from building it at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"  # python3 3.11, as the Containerfile's default base
MIRROR = os.environ.get("SWARMREG_DEBIAN_MIRROR", "http://deb.debian.org/debian")
VARIANT = "minbase"
# What the Containerfile needs of its base: python3 with venv (pip comes with the venv), and the
# CA certificates that pip's downloads are checked with.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBOOTSTRAP_TIMEOUT = 600
# The host's CA bundle: where PyPI is reached through a TLS-inspecting proxy (as here), its CA is
# in the host's bundle and not in Debian's; the base image gets the host's, as a site's own base
# images carry its CAs.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOTFS_CA_BUNDLE = Path("etc/ssl/certs/ca-certificates.crt")


def cache_root() -> Path:
    return Path(os.environ.get("SWARMREG_TEST_CACHE", "/var/cache/swarmreg-tests"))


def rootfs_key() -> str:
    """What the cached root filesystem is made of, as a short hash."""
    recipe = json.dumps({"suite": SUITE, "mirror": MIRROR, "variant": VARIANT, "packages": sorted(PACKAGES)})
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_rootfs() -> Path:
    """The cached Debian root filesystem (made with debootstrap on the first call), with the
    host's CA bundle in place of Debian's."""
    entry = cache_root() / f"debootstrap-{SUITE}-{rootfs_key()}"
    rootfs, complete = entry / "rootfs", entry / "complete"
    with _locked(cache_root()):
        if not complete.exists():
            partial = entry / "rootfs.partial"
            for left in (partial, rootfs):  # an interrupted earlier run's
                shutil.rmtree(left, ignore_errors=True)
            entry.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(partial), MIRROR],
                capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT, check=False)
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise RuntimeError(f"debootstrap exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                                   f"{done.stderr[-3000:]}")
            for deb in (partial / "var/cache/apt/archives").glob("*.deb"):  # 45 MB the image does not need
                deb.unlink()
            partial.rename(rootfs)
            complete.write_text(rootfs_key() + "\n")
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / ROOTFS_CA_BUNDLE)
    return rootfs
