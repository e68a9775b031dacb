"""Blob metainfo: deterministic, byte-identical to libtorrent's own, validated when received."""

from __future__ import annotations

from pathlib import Path

import libtorrent as lt
import pytest

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.swarm.metainfo import (
    BLOCK,
    LARGEST_PIECE,
    MetainfoCache,
    build_metainfo,
    piece_length_for,
)
from tests.conftest import random_bytes


def write_blob(directory: Path, data: bytes) -> tuple[Path, Digest]:
    digest = Digest.of(data)
    path = directory / digest.hex
    path.write_bytes(data)
    return path, digest


def libtorrent_metainfo(path: Path, piece_length: int) -> bytes:
    size = path.stat().st_size
    creator = lt.create_torrent([lt.create_file_entry(path.name, size)], piece_length, lt.create_torrent.v2_only)
    lt.set_piece_hashes(creator, str(path.parent))
    torrent = creator.generate()
    del torrent[b"creation date"]
    return lt.bencode(torrent)


@pytest.mark.parametrize("size", [1, BLOCK - 1, BLOCK, BLOCK + 1, 65 * 1024, 300_000, 4 << 20, (4 << 20) + 1,
                                  (5 << 20) + 12345])
def test_identical_to_libtorrents_v2_torrent(tmp_path: Path, size: int) -> None:
    path, digest = write_blob(tmp_path, random_bytes(size, seed=size))
    metainfo = build_metainfo(path, digest)
    assert metainfo.raw == libtorrent_metainfo(path, piece_length_for(size))
    assert metainfo.size == size
    assert metainfo.num_pieces == -(-size // piece_length_for(size))


def test_the_same_blob_always_gives_the_same_info_hash(tmp_path: Path) -> None:
    data = random_bytes(3 << 20)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build_metainfo(*write_blob(tmp_path / "a", data))
    second = build_metainfo(*write_blob(tmp_path / "b", data))
    assert first.raw == second.raw and first.info_hash == second.info_hash
    torrent = lt.bdecode(first.raw)
    assert set(torrent) == {b"info", b"piece layers"}  # no creation date, no announce URLs
    assert set(torrent[b"info"]) == {b"file tree", b"meta version", b"name", b"piece length"}
    assert torrent[b"info"][b"name"] == first.digest.hex.encode()
    assert not lt.load_torrent_buffer(first.raw).ti.info_hashes().has_v1()


def test_piece_length_policy_is_monotonic_and_bounded() -> None:
    sizes = [1, 1 << 20, 4 << 20, (4 << 20) + 1, 64 << 20, 1 << 30, 5 << 30, 100 << 30]
    lengths = [piece_length_for(size) for size in sizes]
    assert lengths == sorted(lengths)
    assert all(length >= BLOCK and length & (length - 1) == 0 for length in lengths)
    assert lengths[-1] == LARGEST_PIECE


def test_received_metainfo_must_describe_the_digest(tmp_path: Path) -> None:
    path, digest = write_blob(tmp_path, random_bytes(100_000))
    metainfo = build_metainfo(path, digest)
    with pytest.raises(SwarmregError):
        type(metainfo).parse(metainfo.raw, Digest.of(b"another blob"))
    with pytest.raises(SwarmregError):
        type(metainfo).parse(b"d4:spami1ee", digest)
    with pytest.raises(SwarmregError):
        type(metainfo).parse(b"not bencode", digest)
    hybrid = lt.create_torrent([lt.create_file_entry(digest.hex, 100_000)], 65536)  # v1 + v2
    lt.set_piece_hashes(hybrid, str(tmp_path))
    with pytest.raises(SwarmregError):
        type(metainfo).parse(lt.bencode(hybrid.generate()), digest)


def test_cache_round_trip_and_damage(tmp_path: Path) -> None:
    path, digest = write_blob(tmp_path, random_bytes(50_000))
    cache = MetainfoCache(tmp_path / "metainfo")
    cache.prepare()
    assert cache.get(digest) is None
    metainfo = build_metainfo(path, digest)
    cache.put(metainfo, "library/app")
    assert cache.get(digest) == metainfo
    assert cache.namespace(digest) == "library/app"
    (tmp_path / "metainfo" / f"{digest.hex}.torrent").write_bytes(b"garbage")
    assert cache.get(digest) is None  # a damaged entry is dropped, to be fetched again
    assert not (tmp_path / "metainfo" / f"{digest.hex}.torrent").exists()


def test_an_empty_blob_has_no_torrent(tmp_path: Path) -> None:
    path, digest = write_blob(tmp_path, b"")
    with pytest.raises(SwarmregError):
        build_metainfo(path, digest)


def test_piece_lengths_by_size_as_kraken_takes_them() -> None:
    lengths = {0: 64 << 10, 8 << 20: 1 << 20, 1 << 30: 4 << 20}
    assert piece_length_for(1, lengths) == 64 << 10
    assert piece_length_for((8 << 20) - 1, lengths) == 64 << 10
    assert piece_length_for(8 << 20, lengths) == 1 << 20
    assert piece_length_for(5 << 30, lengths) == 4 << 20
    # Blobs below the smallest size named take its length.
    assert piece_length_for(10, {1 << 20: 512 << 10}) == 512 << 10
