"""The data directory's layout: every path a daemon writes under it is named here, and only here.

As CNCF distribution's ``registry/storage/paths.go`` does for its storage, this module is the
one description of the tree (docs/layout.md shows it)::

    <data_dir>/
      LOCK                         flock()ed by the daemon that uses the directory
      blobs/<alg>/<xx>/<hex>       committed blobs, named by their digest: <alg> is sha256 or sha512,
                                   xx the first two hex digits
      tmp/<random>                 blob writes in progress; emptied at start-up
      uploads/<uid>/data           an upload session's bytes, each at its offset
      uploads/<uid>/meta.json      the byte ranges the session has received
      metainfo/<hex>.torrent       cached torrent metainfo of a blob
      metainfo/<hex>.namespace     the namespace that metainfo was first fetched for
      downloads/<hex>              a blob an agent is receiving through the swarm
      backend/                     the filesystem backend's root: its own blobs/ and tmp/
      index.db                     the index's SQLite database (and its -wal/-shm files)
      index-node                   the index node's id (its leases of the replication queue)

``backend`` and ``index.db`` are the defaults of ``[[backends]] options.root`` and
``index.database``; relative settings are taken from the data directory.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from swarmreg.digest import Digest

UPLOAD_DATA = "data"
UPLOAD_META = "meta.json"


@attrs.frozen
class BlobTree:
    """A content-addressed tree: ``blobs/<alg>/<xx>/<hex>`` beside a ``tmp/`` on the same filesystem.

    The data directory is one; the filesystem backend's root is another.
    """

    root: Path = attrs.field(converter=Path)

    @property
    def blobs(self) -> Path:
        """The directory holding one subdirectory per digest algorithm."""
        return self.root / "blobs"

    def algorithm_dir(self, algorithm: str) -> Path:
        """``blobs/<alg>``: the blobs named by digests of ``algorithm``."""
        return self.blobs / algorithm

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, digest: Digest) -> Path:
        return self.algorithm_dir(digest.algorithm) / digest.hex[:2] / digest.hex


@attrs.frozen
class DataLayout(BlobTree):
    """Every path under a daemon's data directory."""

    @property
    def lock(self) -> Path:
        return self.root / "LOCK"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def metainfo(self) -> Path:
        return self.root / "metainfo"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def replication(self) -> Path:
        """An origin's replication queue (swarmreg.origin.replication)."""
        return self.root / "replication"

    @property
    def index_node(self) -> Path:
        """The index node's id, made at its first start (swarmreg.index.replicator): which leases of
        the replication queue are its own after a restart."""
        return self.root / "index-node"

    def setting(self, path: str) -> Path:
        """A path from the configuration (backend root, index database), relative to the data directory."""
        return self.root / path


def upload_dir(uploads: Path, uid: str) -> Path:
    """An upload session's directory under ``uploads/``, holding UPLOAD_DATA and UPLOAD_META.

    ``uid`` must match swarmreg.origin.wire.UPLOAD_ID (the caller checks it).
    """
    return uploads / uid


def metainfo_file(directory: Path, digest: Digest, suffix: str = ".torrent") -> Path:
    """A blob's cached metainfo (``.torrent``) or its namespace (``.namespace``) under ``metainfo/``.

    Named by the hex alone: a sha256 hex (64 digits) never equals a sha512 one (128).
    """
    return directory / f"{digest.hex}{suffix}"
