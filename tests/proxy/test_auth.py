"""Basic authentication: scrypt hashes, the header parser, and `swarmreg passwd`."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from swarmreg.errors import SwarmregError
from swarmreg.registry.auth import BasicAuth, hash_password, verify_password


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_hashes_verify_and_are_salted() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert verify_password("pw", first) and verify_password("pw", second)
    assert not verify_password("Pw", first)
    assert not verify_password("pw", "not a hash") and not verify_password("pw", "scrypt$x$y$z$!!$!!")


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic", "Basic !!!notbase64",
                                    "Basic " + base64.b64encode(b"no-colon").decode(),
                                    basic("alice", "wrong"), basic("mallory", "pw")])
async def test_anything_but_the_right_credentials_is_401_with_a_challenge(header: str | None) -> None:
    auth = BasicAuth({"alice": hash_password("pw")})
    with pytest.raises(SwarmregError) as refused:
        await auth.user(header)
    assert refused.value.status == 401
    assert refused.value.headers == {"WWW-Authenticate": 'Basic realm="swarmreg"'}


async def test_right_credentials_and_no_table() -> None:
    auth = BasicAuth({"alice": hash_password("p:w")})
    assert await auth.user(basic("alice", "p:w")) == "alice"  # a colon in the password is fine
    assert await auth.user(basic("alice", "p:w")) == "alice"  # the second time from the cache
    assert await BasicAuth({}).user(None) is None


def test_cli_passwd_prints_a_hash_that_verifies() -> None:
    result = subprocess.run([sys.executable, "-m", "swarmreg", "passwd", "--stdin"], input="correct horse\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert verify_password("correct horse", result.stdout.strip())
