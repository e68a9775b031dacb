"""MetainfoBuilder: the metainfo hashed as a blob's bytes arrive is byte-identical to
build_metainfo's of the stored file, and to libtorrent's own create_torrent."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.swarm.metainfo import BLOCK, MetainfoBuilder, build_metainfo, piece_length_for
from tests.conftest import random_bytes
from tests.swarm.test_metainfo import libtorrent_metainfo, write_blob

KiB, MiB = 1 << 10, 1 << 20

SIZES = {
    "1 byte": 1,
    "one block": BLOCK,
    "one block and a byte": BLOCK + 1,
    "one whole piece": 64 * KiB,  # piece length 64 KiB up to 4 MiB
    "one short piece": 40_000,
    "many pieces, short last": 5 * MiB + 12_345,  # 256 KiB pieces, the last one short
    "many pieces, exact multiple": 6 * MiB,
    "many pieces, last one a byte": 4 * MiB + 1,
}


def feeds(data: bytes, seed: int) -> dict[str, list[bytes]]:
    """The same bytes cut in several ways: whole, in blocks, in irregular and odd chunks."""
    rng = random.Random(seed)
    irregular, offset = [], 0
    while offset < len(data):
        step = rng.choice([1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 100_000, 1 << 20])
        irregular.append(data[offset:offset + step])
        offset += step
    return {
        "whole": [data],
        "blocks": [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)],
        "irregular": irregular,
        "odd": [data[i:i + 4099] for i in range(0, len(data), 4099)],
    }


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_byte_identical_to_build_metainfo_and_libtorrent(tmp_path: Path, size: int) -> None:
    data = random_bytes(size, seed=size)
    path, digest = write_blob(tmp_path, data)
    expected = build_metainfo(path, digest)
    assert expected.raw == libtorrent_metainfo(path, piece_length_for(size))
    for how, chunks in feeds(data, size).items():
        builder = MetainfoBuilder(digest, size)
        for chunk in chunks:
            builder.update(chunk)
        assert builder.finish().raw == expected.raw, how


def test_an_ssl_torrent_is_identical_too(tmp_path: Path) -> None:
    data = random_bytes(300_000, seed=9)
    path, digest = write_blob(tmp_path, data)
    cert = b"-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"
    builder = MetainfoBuilder(digest, len(data), cert)
    builder.update(memoryview(data))
    assert builder.finish().raw == build_metainfo(path, digest, cert).raw


def test_more_or_fewer_bytes_than_announced_are_refused() -> None:
    data = random_bytes(50_000, seed=3)
    digest = Digest.of(data)
    short = MetainfoBuilder(digest, len(data) + 1)
    short.update(data)
    with pytest.raises(SwarmregError, match="of the"):
        short.finish()
    long = MetainfoBuilder(digest, len(data) - 1)
    with pytest.raises(SwarmregError, match="more than"):
        long.update(data)
    with pytest.raises(SwarmregError):
        MetainfoBuilder(Digest.of(b""), 0)
