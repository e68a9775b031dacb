"""Small clients for the origin API used by several test modules."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(namespace: str, digest: str) -> str:
    """The origin's blob path, namespace URL-encoded as Kraken clients send it."""
    return f"/namespace/{namespace.replace('/', '%2F')}/blobs/{digest}"


async def start_upload(client: httpx.AsyncClient, namespace: str, digest: str) -> str:
    response = await client.post(f"{blob_path(namespace, digest)}/uploads")
    assert response.status_code == 200, response.text
    return response.headers["Location"]


async def patch(client: httpx.AsyncClient, namespace: str, digest: str, uid: str,
                data: bytes, start: int) -> httpx.Response:
    return await client.patch(f"{blob_path(namespace, digest)}/uploads/{uid}", content=data,
                              headers={"Content-Range": f"{start},{start + len(data)}"})


async def commit(client: httpx.AsyncClient, namespace: str, digest: str, uid: str,
                 through: bool = False) -> httpx.Response:
    return await client.put(f"{blob_path(namespace, digest)}/uploads/{uid}",
                            params={"through": "true" if through else "false"})


async def upload_blob(client: httpx.AsyncClient, namespace: str, data: bytes, *,
                      chunk: int = 1 << 20, through: bool = False) -> str:
    """Upload ``data`` in order in ``chunk``-sized PATCHes and commit; returns the digest."""
    digest = digest_of(data)
    uid = await start_upload(client, namespace, digest)
    for start in range(0, len(data), chunk):
        response = await patch(client, namespace, digest, uid, data[start:start + chunk], start)
        assert response.status_code == 200, response.text
    response = await commit(client, namespace, digest, uid, through)
    assert response.status_code == 200, response.text
    return digest


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is the spec's JSON error envelope with ``code`` and ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    errors = response.json()["errors"]
    assert [e["code"] for e in errors] == [code], errors
    assert all(e["message"] for e in errors)


class RawRequest:
    """An HTTP/1.1 request written by hand, so a test can stall or abandon its body."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def open(cls, address: str, method: str, path: str, headers: dict[str, str]) -> RawRequest:
        host, _, port = address.rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        head = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        await stream.send_all(head.encode())
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def response(self) -> tuple[int, bytes]:
        """Read until the server closes or a complete response head + body arrives."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            buffer += data
        head, _, body = buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                while len(body) < int(value):
                    data = await self.stream.receive_some(65536)
                    if not data:
                        break
                    body += data
        return status, body

    async def aclose(self) -> None:
        await self.stream.aclose()


def no_blob_anywhere(data_dir: Path, digest: str) -> bool:
    """True when ``digest`` is not committed in the data directory (local store)."""
    hex_ = digest.removeprefix("sha256:")
    return not (data_dir / "blobs" / "sha256" / hex_[:2] / hex_).exists()


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` for the block; skips the test if mounting fails."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot run mount(8) for a tmpfs: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        # Lazy: a file a stopped daemon's thread still holds does not keep the mount.
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, name: str = "filler", *, leave: int = 0) -> Path:
    """Write one file into ``directory`` until its filesystem has only ``leave`` bytes free."""
    path = directory / name
    chunk = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as file:
        try:
            while True:
                stat = os.statvfs(directory)
                room = stat.f_bavail * stat.f_frsize - leave
                if room <= 0:
                    break
                file.write(chunk[:room])
        except OSError:
            pass
    return path
