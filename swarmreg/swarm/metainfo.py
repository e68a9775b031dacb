"""Deterministic BitTorrent v2 metainfo for a blob, built without libtorrent's hasher.

A blob's torrent is single-file, named by the digest's hex, with a piece length
from ``piece_length_for``, no creation date and no trackers: every origin that
holds the blob derives the same bytes and so the same info-hash. The merkle tree
is computed here with hashlib (BEP 52: SHA-256 over 16 KiB blocks, zero-hash
padding) because libtorrent's ``set_piece_hashes`` holds the GIL for the whole
file; hashlib releases it, so hashing in a worker thread leaves the event loop
free. Tests check the output is byte-identical to libtorrent's own.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import libtorrent as lt

from swarmreg.digest import Digest
from swarmreg.errors import INTERNAL, SwarmregError
from swarmreg.layout import metainfo_file

log = logging.getLogger(__name__)

BLOCK = 16 << 10
_ZERO = bytes(32)
KiB, MiB = 1 << 10, 1 << 20

# Piece length by blob size: small pieces let a stream start sooner and small
# blobs spread over several peers; large ones keep per-piece overhead low.
PIECE_LENGTH_POLICY = (
    (4 * MiB, 64 * KiB),
    (64 * MiB, 256 * KiB),
    (512 * MiB, 1 * MiB),
    (4096 * MiB, 4 * MiB),
)
LARGEST_PIECE = 16 * MiB


def piece_length_for(size: int, lengths: Mapping[int, int] | None = None) -> int:
    """The piece length for a blob of ``size`` bytes (a power of two >= 16 KiB): the documented
    table's, or with ``lengths`` (``origin.piece_lengths``, as Kraken's origins take it: a blob
    size -> the length for blobs from that size on) the entry of the largest size <= ``size``."""
    if lengths:
        return lengths[max((at for at in lengths if at <= size), default=min(lengths))]
    for limit, length in PIECE_LENGTH_POLICY:
        if size <= limit:
            return length
    return LARGEST_PIECE


@attrs.frozen
class Metainfo:
    """A blob's torrent: the bencoded bytes and what is read from them."""

    raw: bytes
    digest: Digest
    info_hash: str  # the v2 (SHA-256) info-hash, hex
    size: int
    piece_length: int
    # The CA an SSL torrent's peers must present certificates from (PEM), or b"".
    root_cert: bytes = b""

    @property
    def num_pieces(self) -> int:
        return -(-self.size // self.piece_length)

    def piece_range(self, index: int) -> tuple[int, int]:
        """Bytes [start, end) of piece ``index``."""
        start = index * self.piece_length
        return start, min(start + self.piece_length, self.size)

    @classmethod
    def parse(cls, raw: bytes, digest: Digest) -> Metainfo:
        """Read metainfo received from elsewhere; it must describe ``digest`` as a single file."""
        try:
            params = lt.load_torrent_buffer(raw)
            info = params.ti
            if info is None:
                raise ValueError("no info dictionary")
            files = info.layout()
            padding = all(files.file_flags(i) & lt.file_storage.flag_pad_file for i in range(1, files.num_files()))
            if files.file_path(0) != digest.hex or info.name() != digest.hex or not padding:
                raise ValueError("not a single-file torrent named by the digest")
            if info.info_hashes().has_v1():
                raise ValueError("not a v2-only torrent")
            size, piece_length = files.file_size(0), info.piece_length()
        except (RuntimeError, ValueError) as error:
            log.warning("invalid metainfo for %s: %s", digest, error)  # libtorrent's text: logged only
            raise SwarmregError(INTERNAL, f"invalid metainfo for {digest}") from None
        return cls(raw, digest, str(info.info_hashes().v2), size, piece_length, info.ssl_cert().encode())

    def torrent_params(self) -> lt.add_torrent_params:
        """Fresh add_torrent_params for this torrent."""
        return lt.load_torrent_buffer(self.raw)


def _sha(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def _fold(layer: list[bytes], width: int, pad: bytes) -> bytes:
    """The merkle root over ``layer`` padded with ``pad`` to ``width`` (a power of two)."""
    layer = layer + [pad] * (width - len(layer))
    while len(layer) > 1:
        layer = [_sha(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _read_full(file: io.RawIOBase, view: memoryview) -> int:
    """Fill ``view`` from ``file`` unless the file ends first; returns the bytes read."""
    filled = 0
    while filled < len(view) and (n := file.readinto(view[filled:])):
        filled += n
    return filled


def build_metainfo(path: Path, digest: Digest, root_cert: bytes = b"",
                   piece_lengths: Mapping[int, int] | None = None) -> Metainfo:
    """Hash the blob at ``path`` into its v2 metainfo (blocking; run it in a thread).

    With ``root_cert`` (the cluster CA, PEM) it is an SSL torrent: only peers with a
    certificate from that CA take part. The CA is part of the info-hash, and so is the piece
    length (``piece_length_for`` with ``piece_lengths``).
    """
    size = os.stat(path).st_size
    if size == 0:
        raise SwarmregError(INTERNAL, "an empty blob has no torrent")
    piece_length = piece_length_for(size, piece_lengths)
    per_piece = piece_length // BLOCK
    pieces: list[bytes] = []
    leaves: list[bytes] = []
    with open(path, "rb", buffering=0) as file:
        buffer = bytearray(piece_length)
        view = memoryview(buffer)
        while n := _read_full(file, view):
            leaves = [_sha(view[i:min(i + BLOCK, n)]) for i in range(0, n, BLOCK)]
            pieces.append(_fold(leaves, per_piece, _ZERO))
    return _encode(digest, size, piece_length, pieces, leaves, root_cert)


def _encode(digest: Digest, size: int, piece_length: int, pieces: list[bytes], last_leaves: list[bytes],
            root_cert: bytes) -> Metainfo:
    """The bencoded torrent of a blob of ``size`` bytes whose pieces hash to ``pieces`` (merkle
    roots of each piece's 16 KiB blocks), ``last_leaves`` being the last piece's block hashes."""
    per_piece = piece_length // BLOCK
    if len(pieces) == 1:  # one piece: the root covers only the blocks there are
        root = _fold(last_leaves, _next_power_of_two(len(last_leaves)), _ZERO)
        layers = {}
    else:
        root = _fold(pieces, _next_power_of_two(len(pieces)), _fold([], per_piece, _ZERO))
        layers = {root: b"".join(pieces)}
    name = digest.hex.encode()
    # Any: libtorrent's stubs type bencodable values as a union of two dict types (and more),
    # which mypy cannot match a nested dict literal against.
    torrent: dict[bytes, Any] = {
        b"info": {
            b"file tree": {name: {b"": {b"length": size, b"pieces root": root}}},
            b"meta version": 2,
            b"name": name,
            b"piece length": piece_length,
            **({b"ssl-cert": root_cert} if root_cert else {}),
        },
        b"piece layers": layers,
    }
    return Metainfo.parse(lt.bencode(torrent), digest)


class MetainfoBuilder:
    """The metainfo ``build_metainfo`` gives, hashed from the bytes as they arrive (a fetch that
    writes a blob hashes it in the same pass): feed ``update`` the blob in order, in chunks of
    any size, then ``finish``. ``size`` is announced first (it sets the piece length); more or
    fewer bytes than that are an error. Blocking like hashlib: feed large chunks from a thread.
    """

    def __init__(self, digest: Digest, size: int, root_cert: bytes = b"",
                 piece_lengths: Mapping[int, int] | None = None) -> None:
        if size <= 0:
            raise SwarmregError(INTERNAL, "an empty blob has no torrent")
        self.digest = digest
        self.size = size
        self.root_cert = root_cert
        self.piece_length = piece_length_for(size, piece_lengths)
        self._per_piece = self.piece_length // BLOCK
        self.received = 0
        self._pieces: list[bytes] = []
        self._leaves: list[bytes] = []  # the current piece's block hashes
        self._partial = bytearray()  # the start of a block that has not all arrived

    def update(self, data: bytes | memoryview) -> None:
        """Hash the next ``data`` of the blob."""
        view = memoryview(data)
        if self.received + len(view) > self.size:
            raise SwarmregError(INTERNAL, f"{self.digest}: more than the {self.size} bytes announced")
        self.received += len(view)
        if self._partial:
            take = min(BLOCK - len(self._partial), len(view))
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < BLOCK:
                return
            self._add_leaf(_sha(self._partial))
            self._partial.clear()
        whole = len(view) - len(view) % BLOCK
        for offset in range(0, whole, BLOCK):
            self._add_leaf(_sha(view[offset:offset + BLOCK]))
        self._partial += view[whole:]

    def _add_leaf(self, leaf: bytes) -> None:
        self._leaves.append(leaf)
        if len(self._leaves) == self._per_piece and (len(self._pieces) + 1) * self.piece_length < self.size:
            # A full piece that is not the blob's last (finish folds that one).
            self._pieces.append(_fold(self._leaves, self._per_piece, _ZERO))
            self._leaves = []

    def finish(self) -> Metainfo:
        """The metainfo, once every announced byte has been fed."""
        if self.received != self.size:
            raise SwarmregError(INTERNAL, f"{self.digest}: {self.received} of the {self.size} bytes announced")
        if self._partial:
            self._leaves.append(_sha(self._partial))
            self._partial.clear()
        pieces = [*self._pieces, _fold(self._leaves, self._per_piece, _ZERO)]
        return _encode(self.digest, self.size, self.piece_length, pieces, self._leaves, self.root_cert)


class MetainfoCache:
    """Metainfo kept on disk as ``<root>/<hex>.torrent``, so restarts need no re-hashing,
    with the namespace it was first fetched for beside it (``<hex>.namespace``).

    Only torrents rooted at ``root_cert`` (b"": plain torrents) count: metainfo cached before
    the cluster's CA changed is dropped, to be rebuilt or fetched again.
    """

    def __init__(self, root: Path, root_cert: bytes = b"", piece_lengths: Mapping[int, int] | None = None) -> None:
        self.root = Path(root)
        self.root_cert = root_cert
        self.piece_lengths = piece_lengths  # how this node builds metainfo (origin.piece_lengths)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.tmp"):
            stale.unlink()

    def _path(self, digest: Digest, suffix: str = ".torrent") -> Path:
        return metainfo_file(self.root, digest, suffix)

    def get(self, digest: Digest) -> Metainfo | None:
        try:
            raw = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None
        try:
            metainfo = Metainfo.parse(raw, digest)
        except SwarmregError:
            metainfo = None
        if metainfo is None or metainfo.root_cert != self.root_cert:
            self._path(digest).unlink(missing_ok=True)  # damaged or stale: rebuilt or refetched
            return None
        return metainfo

    def namespace(self, digest: Digest) -> str:
        try:
            return self._path(digest, ".namespace").read_text()
        except FileNotFoundError:
            return ""

    def put(self, metainfo: Metainfo, namespace: str = "") -> None:
        """Cache ``metainfo`` (and its namespace); an OSError (a full disk) leaves no temp file."""
        for suffix, data in ((".namespace", namespace.encode()), (".torrent", metainfo.raw)):
            temp = self._path(metainfo.digest, suffix + ".tmp")
            try:
                temp.write_bytes(data)
                os.replace(temp, self._path(metainfo.digest, suffix))
            except OSError:
                temp.unlink(missing_ok=True)
                raise

    def delete(self, digest: Digest) -> None:
        for suffix in (".torrent", ".namespace"):
            self._path(digest, suffix).unlink(missing_ok=True)
