"""The embedded default backend: a content-addressed directory tree on a local filesystem."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import attrs
import trio

from swarmreg.backends.base import Backend
from swarmreg.digest import Digest
from swarmreg.layout import DataLayout
from swarmreg.store.blobstore import BlobStore
from swarmreg.store.files import FileBody


@attrs.frozen
class FilesystemOptions:
    # Relative paths are taken from the daemon's data directory (swarmreg.layout).
    root: str = "backend"


class FilesystemBackend(Backend):
    """Blobs under ``root/blobs/sha256/<xx>/<hex>``, shared by every namespace (content-addressed)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.store = BlobStore(root, fsync=fsync)
        self.store.prepare()

    @classmethod
    def from_options(cls, options: FilesystemOptions, data_dir: Path) -> FilesystemBackend:
        """The backend ``[[backends]] type = "filesystem"`` configures."""
        return cls(DataLayout(data_dir).setting(options.root))

    async def stat(self, namespace: str, digest: Digest) -> int | None:
        return self.store.size(digest)

    async def upload(self, namespace: str, digest: Digest, chunks: AsyncIterable[bytes]) -> int:
        return await self.store.write(digest, chunks)

    async def upload_file(self, namespace: str, digest: Digest, path: Path) -> None:
        """Hard-link the verified file in (instant, on one filesystem), else copy it in the kernel."""
        await trio.to_thread.run_sync(self._link_or_copy, digest, path)

    def _link_or_copy(self, digest: Digest, path: Path) -> None:
        if self.store.touch(digest):  # held already: committed again now (the collector's grace)
            return
        temp = self.store.temp_path()
        try:
            try:
                os.link(path, temp)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copyfile(path, temp)  # sendfile(2): no bytes through Python
            self.store.rename_into_place(temp, digest)
        finally:
            temp.unlink(missing_ok=True)

    async def download(self, namespace: str, digest: Digest) -> FileBody | None:
        opened = self.store.open_body(digest)
        return None if opened is None else opened[0]

    async def delete(self, namespace: str, digest: Digest) -> bool:
        return await self.store.delete(digest)

    async def modified(self, namespace: str, digest: Digest) -> float | None:
        stat = self.store.stat(digest)
        return None if stat is None else stat.st_mtime

    async def list(self, namespace: str) -> AsyncIterator[Digest]:
        for digest in await trio.to_thread.run_sync(lambda: list(self.store.digests())):
            yield digest

