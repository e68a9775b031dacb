"""Debian's docker-registry as an upstream: plain HTTP, htpasswd basic auth, TLS and mTLS."""

from __future__ import annotations

import hashlib
import re
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.clients.registry import _free_port
from tests.clients.tools import Daemon, remove_tree, require_binary, short_tempdir

with warnings.catch_warnings():  # bcrypt for htpasswd via libxcrypt (no bcrypt package here)
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

BASE = """\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
  secret: swarmreg-tests
"""


def htpasswd_line(user: str, password: str) -> str:
    """What ``htpasswd -Bbn user password`` prints (docker-registry accepts only bcrypt)."""
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))}"


_roots: dict[int, Path] = {}


def blob_path(port: int, digest: str) -> Path:
    """Where the docker-registry on ``port`` keeps blob ``digest`` (its filesystem layout)."""
    algorithm, _, hex_ = digest.partition(":")
    return _roots[port] / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def docker_registry(log_dir: Path, *, users: dict[str, str] | None = None, cert: str = "", key: str = "",
                    client_ca: str = "") -> Iterator[int]:
    """docker-registry on a free 127.0.0.1 port (yielded) with htpasswd ``users``, and TLS with
    ``cert``/``key`` (client certificates signed by ``client_ca`` required, if given). Its blobs
    are at ``blob_path(port, digest)`` while it runs."""
    binary = require_binary("docker-registry", "docker-registry")
    root = short_tempdir("upstream")
    daemon = None
    try:
        for _attempt in range(5):
            port = _free_port()
            text = BASE.format(root=root / "data", port=port)
            if cert:
                text += f"  tls:\n    certificate: {cert}\n    key: {key}\n"
                if client_ca:
                    text += f"    clientcas:\n      - {client_ca}\n"
            if users is not None:
                (root / "htpasswd").write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
                text += f"auth:\n  htpasswd:\n    realm: upstream-tests\n    path: {root / 'htpasswd'}\n"
            (root / "config.yml").write_text(text)
            daemon = Daemon.start("docker-registry", [binary, "serve", str(root / "config.yml")],
                                  log_dir / "docker-registry.log")
            try:
                daemon.wait_until(lambda port=port: _listens(port), f"127.0.0.1:{port} listens", timeout=30)
                break
            except RuntimeError:
                if "address already in use" not in daemon.log.read_text(errors="replace"):
                    raise
        else:
            raise RuntimeError("docker-registry found no free port")
        _roots[port] = root / "data"
        yield port
    finally:
        _roots.pop(port, None)
        if daemon is not None:
            daemon.stop()
        remove_tree(root)


async def push_blob(base_url: str, repository: str, data: bytes, *, auth: httpx.Auth | None = None) -> str:
    """Put ``data`` into the registry at ``base_url`` as a real client does, returning its digest:
    POST /v2/<repo>/blobs/uploads/?digest=<digest> with the bytes (the spec's monolithic upload);
    docker-registry 2.8 answers that with 202 and an open session instead of 201, which is then
    finished with one PUT <Location>&digest=<digest> of the bytes."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    headers = {"Content-Type": "application/octet-stream"}
    async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=60) as client:
        started = await client.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest},
                                    content=data, headers=headers)
        if started.status_code == 202:
            location = httpx.URL(started.headers["Location"])  # keeps its _state query
            done = await client.put(location.copy_merge_params({"digest": digest}), content=data, headers=headers)
            assert done.status_code == 201, done.text
        else:
            assert started.status_code == 201, started.text
    return digest


def upstream_blob_gets(log: Path) -> dict[str, int]:
    """How many times the upstream's access log shows each blob GET answered 200."""
    counts: dict[str, int] = {}
    for digest in re.findall(r'"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP/1.1" 200 ', log.read_text()):
        counts[digest] = counts.get(digest, 0) + 1
    return counts


def blob_requests(log: Path, method: str, digest: str) -> int:
    """How many ``method`` requests for blob ``digest`` the docker-registry's access log shows."""
    needle = re.compile(rf'"{method} /v2/\S+/blobs/{re.escape(digest)} HTTP/1\.1" (\d+)')
    return len(needle.findall(log.read_text(errors="replace"))) if log.exists() else 0
