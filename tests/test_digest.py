"""Digest: the accepted forms are ``sha256:<64 lowercase hex>`` and ``sha512:<128 lowercase hex>``."""

import hashlib

import pytest

from swarmreg.digest import MAX_DIGEST_LENGTH, Digest
from swarmreg.errors import DIGEST_INVALID, SwarmregError

HEX = "0123456789abcdef" * 4
HEX512 = "0123456789abcdef" * 8


def test_parse_accepts_sha256_lowercase_hex():
    digest = Digest.parse(f"sha256:{HEX}")
    assert digest.hex == HEX
    assert digest.algorithm == "sha256"


def test_parse_accepts_sha512_lowercase_hex():
    digest = Digest.parse(f"sha512:{HEX512}")
    assert digest.hex == HEX512
    assert digest.algorithm == "sha512"
    assert str(digest) == f"sha512:{HEX512}"
    assert len(str(digest)) == MAX_DIGEST_LENGTH


def test_sha256_and_sha512_digests_differ_by_algorithm():
    assert Digest(HEX) == Digest(HEX, "sha256") != Digest(HEX512, "sha512")
    assert Digest.parse(f"sha512:{HEX512}").hasher().name == "sha512"
    assert Digest.parse(f"sha256:{HEX}").hasher().name == "sha256"


@pytest.mark.parametrize("text", [
    f"sha512:{HEX512[:-1]}",        # 127 hex digits
    f"sha512:{HEX512}0",            # 129 hex digits
    f"sha512:{HEX}",                # a sha256's length under sha512
    f"sha256:{HEX512}",             # a sha512's length under sha256
    f"sha512:{HEX512.upper()}",
    "sha512:",
    "sha512:../../etc/passwd",
])
def test_parse_rejects_sha512_of_the_wrong_form(text):
    with pytest.raises(SwarmregError) as info:
        Digest.parse(text)
    assert info.value.code is DIGEST_INVALID
    assert info.value.status == 400


def test_constructor_checks_hex_against_its_algorithm():
    for hex_, algorithm in [(HEX512, "sha256"), (HEX, "sha512"), (HEX, "md5"), (HEX, "SHA256")]:
        with pytest.raises(SwarmregError) as info:
            Digest(hex_, algorithm)
        assert info.value.code is DIGEST_INVALID


@pytest.mark.parametrize("text", [
    f"sha256:{HEX[:-1]}",           # 63 hex digits
    f"sha256:{HEX}0",               # 65 hex digits
    "sha256:",                      # nothing after the colon
    f"sha256:{HEX.upper()}",        # uppercase hex
    f"sha256:{HEX[:-1]}g",          # a non-hex letter
    HEX,                            # no algorithm
    f":{HEX}",                      # empty algorithm
    f"SHA256:{HEX}",                # uppercase algorithm
    f" sha256:{HEX}",               # surrounding whitespace
    f"sha256:{HEX}\n",
    "",
    "garbage",
    "sha256:../../etc",             # path traversal
    "sha256:../../etc/passwd",
    f"sha256:{HEX[:32]}/{HEX[:31]}",
    f"sha256:{HEX}:{HEX}",
])
def test_parse_rejects_malformed_digests(text):
    with pytest.raises(SwarmregError) as info:
        Digest.parse(text)
    assert info.value.code is DIGEST_INVALID
    assert info.value.status == 400


@pytest.mark.parametrize("text", [
    "md5:" + "ab" * 16,
    "sha1:" + "ab" * 20,
    "blake3:" + "ab" * 32,
    f"sha384:{HEX}",
])
def test_parse_rejects_other_algorithms_as_unsupported(text):
    with pytest.raises(SwarmregError) as info:
        Digest.parse(text)
    assert info.value.code is DIGEST_INVALID
    assert "unsupported" in info.value.message
    assert text.partition(":")[0] in info.value.message


def test_parse_rejects_non_strings():
    with pytest.raises(SwarmregError) as info:
        Digest.parse(b"sha256:" + HEX.encode())  # type: ignore[arg-type]
    assert info.value.code is DIGEST_INVALID


def test_constructor_validates_hex_too():
    """A Digest cannot be built around a path-like or uppercase value, whatever the entry point."""
    for bad in ["../../etc", HEX.upper(), HEX[:10]]:
        with pytest.raises(SwarmregError) as info:
            Digest(bad)
        assert info.value.code is DIGEST_INVALID


def test_of_hashes_bytes_and_str_round_trips():
    data = b"hello swarmreg"
    digest = Digest.of(data)
    assert digest.hex == hashlib.sha256(data).hexdigest()
    assert str(digest) == f"sha256:{digest.hex}"
    assert Digest.parse(str(digest)) == digest


def test_of_hashes_with_sha512_on_request():
    data = b"hello swarmreg"
    digest = Digest.of(data, "sha512")
    assert digest.hex == hashlib.sha512(data).hexdigest()
    assert str(digest) == f"sha512:{digest.hex}"
    assert Digest.parse(str(digest)) == digest
    with pytest.raises(SwarmregError) as info:
        Digest.of(data, "md5")
    assert info.value.code is DIGEST_INVALID


def test_digests_compare_and_hash_by_value():
    a, b = Digest.of(b"a"), Digest.of(b"a")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Digest.of(b"b")}) == 2
    assert sorted([Digest.of(b"b"), a]) == sorted([a, Digest.of(b"b")])
