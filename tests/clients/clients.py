"""Thin async wrappers for the real clients: skopeo, docker (+dockerd), containerd's ctr, podman.

Each wrapper is callable with the client's own arguments (``await docker("pull", ref)``) and has
a few helpers for what the tests do most. Image references are ``<host:port>/<repo>:<tag>``; the
helpers take the registry's base URL (``http://127.0.0.1:5000``) and turn it into ``host:port``.
Registries are plain HTTP: the helpers pass each client's "no TLS" flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from .tools import Daemon, Result, hostport, run


def containers_env(home: Path) -> dict[str, str]:
    """Environment that keeps skopeo's and podman's per-user state inside ``home``.

    containers/image puts its blob-info cache in /var/lib/containers/cache for root, shared by
    every run, and skopeo then skips uploads it believes a registry already has. With
    ``_CONTAINERS_ROOTLESS_UID`` set it uses ``$XDG_DATA_HOME/containers/cache`` instead (verified
    with ``skopeo --debug``: "Using blob info cache at <home>/data/containers/cache/..."); auth
    files, registries.conf and podman's CNI config go under ``home`` too.
    """
    dirs = {name: home / name for name in ("home", "data", "config", "run")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    registries = home / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    return {
        "HOME": str(dirs["home"]),
        "XDG_DATA_HOME": str(dirs["data"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_RUNTIME_DIR": str(dirs["run"]),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
        "_CONTAINERS_ROOTLESS_UID": "65534",
    }


@attrs.define
class Skopeo:
    """skopeo 1.9 with an isolated blob-info cache; ``await skopeo("inspect", ...)``."""

    binary: str
    home: Path
    env: dict[str, str]

    @property
    def cache_file(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "containers" / "cache" / "blob-info-cache-v1.boltdb"

    async def __call__(self, *args: str, check: bool = True) -> Result:
        return await run([self.binary, "--insecure-policy", *args], env=self.env, check=check)

    async def copy(self, src: str, dest: str, *args: str, all_images: bool = False,
                   src_creds: str | None = None, dest_creds: str | None = None) -> Result:
        """``skopeo copy`` between any two transports, TLS verification off on both sides."""
        flags = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        flags += ["--all"] if all_images else []
        flags += ["--src-creds", src_creds] if src_creds else []
        flags += ["--dest-creds", dest_creds] if dest_creds else []
        return await self("copy", *flags, *args, src, dest)

    async def push(self, layout: Path, registry: str, repo_tag: str, *, ref: str = "latest",
                   all_images: bool = False, creds: str | None = None) -> Result:
        """Copy ``oci:<layout>:<ref>`` to ``docker://<registry host>/<repo_tag>``."""
        return await self.copy(f"oci:{layout}:{ref}", f"docker://{hostport(registry)}/{repo_tag}",
                               all_images=all_images, dest_creds=creds)

    async def pull(self, registry: str, repo_tag: str, out: Path, *, fmt: str = "oci",
                   ref: str = "latest", all_images: bool = False, arch: str | None = None,
                   creds: str | None = None) -> Result:
        """Copy ``docker://<registry host>/<repo_tag>`` into ``oci:<out>:<ref>`` or ``dir:<out>``."""
        dest = f"oci:{out}:{ref}" if fmt == "oci" else f"dir:{out}"
        args = ["--override-arch", arch] if arch else []
        return await self.copy(f"docker://{hostport(registry)}/{repo_tag}", dest, *args,
                               all_images=all_images, src_creds=creds)

    async def inspect(self, registry: str, repo_tag: str, *, raw: bool = False,
                      arch: str | None = None, creds: str | None = None) -> Any:
        """``skopeo inspect`` of a registry image, parsed from JSON (``raw`` = the manifest)."""
        args = ["--override-arch", arch] if arch else []
        args += ["inspect", "--tls-verify=false"]
        args += ["--raw"] if raw else []
        args += ["--creds", creds] if creds else []
        result = await self(*args, f"docker://{hostport(registry)}/{repo_tag}")
        return json.loads(result.stdout)


@attrs.define
class Docker:
    """The Debian docker CLI talking to a private dockerd over its unix socket."""

    binary: str
    socket: Path
    config_dir: Path
    daemon: Daemon

    async def __call__(self, *args: str, check: bool = True, stdin: bytes = b"") -> Result:
        return await run([self.binary, "-H", f"unix://{self.socket}", *args],
                         env={"DOCKER_CONFIG": str(self.config_dir)}, check=check, stdin=stdin)

    async def login(self, registry: str, username: str, password: str) -> Result:
        """``docker login`` to a registry base URL; credentials stay in this test's config dir."""
        return await self("login", "--username", username, "--password-stdin", hostport(registry),
                          stdin=password.encode())

    async def load(self, archive: Path) -> Result:
        """``docker load`` a tarball (see ``layout.write_docker_archive``): no network needed."""
        return await self("load", "--input", str(archive))

    async def image_id(self, ref: str) -> str:
        return (await self("image", "inspect", "--format", "{{.Id}}", ref)).stdout.strip()

    async def repo_digests(self, ref: str) -> list[str]:
        out = await self("image", "inspect", "--format", "{{json .RepoDigests}}", ref)
        return json.loads(out.stdout)


@attrs.define
class Containerd:
    """``ctr`` talking to a private containerd; ``await ctr("images", "ls")``."""

    binary: str
    socket: Path
    daemon: Daemon

    async def __call__(self, *args: str, check: bool = True) -> Result:
        return await run([self.binary, "--address", str(self.socket), *args], check=check)

    async def pull(self, ref: str, *, platform: str | None = None, user: str | None = None) -> Result:
        """``ctr image pull --plain-http --snapshotter native`` (unpacks the layers)."""
        args = ["--platform", platform] if platform else []
        args += ["--user", user] if user else []
        return await self("image", "pull", "--plain-http", "--snapshotter", "native", *args, ref)

    async def image_target(self, ref: str) -> str:
        """The digest containerd recorded for ``ref`` (the manifest or index it was tagged with)."""
        out = (await self("image", "ls")).stdout.splitlines()
        for line in out[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise AssertionError(f"{ref} not in ctr image ls:\n" + "\n".join(out))


@attrs.define
class Podman:
    """podman with its storage (vfs), run root and per-user state in one temp dir."""

    binary: str
    root: Path
    env: dict[str, str]

    async def __call__(self, *args: str, check: bool = True) -> Result:
        globals_ = ["--root", str(self.root / "root"), "--runroot", str(self.root / "runroot"),
                    "--tmpdir", str(self.root / "tmp"), "--storage-driver", "vfs",
                    "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
        return await run([self.binary, *globals_, *args], env=self.env, check=check)

    async def pull(self, ref: str, *, arch: str | None = None, creds: str | None = None) -> Result:
        args = ["--arch", arch] if arch else []
        args += ["--creds", creds] if creds else []
        return await self("pull", "--tls-verify=false", *args, ref)

    async def image_digest(self, ref: str) -> str:
        """The manifest digest podman recorded for ``ref``."""
        return (await self("image", "inspect", "--format", "{{.Digest}}", ref)).stdout.strip()
