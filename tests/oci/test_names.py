"""Repository names, tags and references, by the distribution spec's grammar."""

import pytest

from swarmreg.digest import Digest
from swarmreg.errors import DIGEST_INVALID, NAME_INVALID, TAG_INVALID, SwarmregError
from swarmreg.oci.names import parse_reference, validate_repository, validate_tag

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", [
    "a",
    "0",
    "ubuntu",
    "library/ubuntu",
    "my-org/my.team/some_image",
    "a.b_c__d---e/f",
    "a--b",
    "0/1/2/3",
    "a" * 255,
    "/".join(["ab"] * 85),              # 254 characters across many components
])
def test_valid_repository_names(name):
    assert validate_repository(name) == name


@pytest.mark.parametrize("name", [
    "",
    "A",
    "Library/ubuntu",
    "library/Ubuntu",
    "../x",
    "./x",
    "x/..",
    "a/../b",
    "a/./b",
    "..",
    ".",
    "a//b",
    "/a",
    "a/",
    "a..b",
    "a._b",
    "a___b",                            # only one or two underscores separate
    "-a",
    "a-",
    "_a",
    "a_",
    ".a",
    "a b",
    "a\n",
    "\na",
    "a\x00b",
    "caf\u00e9",
    "a:b",
    "a@b",
    "a\\b",
    "a%2Fb",
    "a" * 256,
    "/".join(["ab"] * 86),              # 257 characters
])
def test_invalid_repository_names(name):
    with pytest.raises(SwarmregError) as info:
        validate_repository(name)
    assert info.value.code is NAME_INVALID
    assert info.value.status == 400
    assert len(info.value.detail["name"]) <= 255


@pytest.mark.parametrize("value", [None, 5, b"library/ubuntu"])
def test_repository_name_must_be_a_string(value):
    with pytest.raises(SwarmregError) as info:
        validate_repository(value)
    assert info.value.code is NAME_INVALID


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "1.0-rc_1", "A" * 128, "x", "a..b", "a--"])
def test_valid_tags(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", [
    "", ".x", "-x", "a" * 129, "a/b", "../x", "a:b", "tag\n", " x", "x ", "caf\u00e9", "a@b", "a+b",
])
def test_invalid_tags(tag):
    with pytest.raises(SwarmregError) as info:
        validate_tag(tag)
    assert info.value.code is TAG_INVALID
    assert info.value.status == 400


def test_parse_reference_tag_or_digest():
    assert parse_reference("latest") == "latest"
    assert parse_reference(f"sha256:{HEX}") == Digest(HEX)
    assert parse_reference(f"sha512:{HEX}{HEX}") == Digest(HEX + HEX, "sha512")


@pytest.mark.parametrize("reference", [
    f"sha384:{HEX}{HEX[:32]}",          # well-formed, but only sha256 and sha512 are supported
    f"sha512:{HEX}",                    # a sha256's length under sha512
    "sha256:abc",
    f"sha256:{HEX.upper()}",
    "sha256:../../etc/passwd",
    ":latest",
    "latest:",
])
def test_parse_reference_refuses_bad_digests(reference):
    with pytest.raises(SwarmregError) as info:
        parse_reference(reference)
    assert info.value.code is DIGEST_INVALID


@pytest.mark.parametrize("reference", ["", "../x", "a/b", ".hidden", "a" * 129])
def test_parse_reference_refuses_bad_tags(reference):
    with pytest.raises(SwarmregError) as info:
        parse_reference(reference)
    assert info.value.code is TAG_INVALID
