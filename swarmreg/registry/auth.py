"""Basic authentication for the registry API, with scrypt password hashes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from swarmreg.errors import UNAUTHORIZED, SwarmregError

_N, _R, _P = 1 << 14, 8, 1
# Verified credentials, so a client sending them on every request costs one scrypt, not one each.
_CACHE_LIMIT = 1024


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for the configuration's ``[proxy.users]`` table."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the hash ``stored`` (False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=32)
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, binascii.Error):
        return False


class BasicAuth:
    """Checks ``Authorization: Basic`` against a user table; no table means no authentication."""

    def __init__(self, users: Mapping[str, str], realm: str = "swarmreg") -> None:
        self.users = dict(users)
        self.challenge = f'Basic realm="{realm}"'
        self._verified: set[bytes] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def user(self, authorization: str | None) -> str | None:
        """The authenticated user, None when authentication is off; UNAUTHORIZED otherwise."""
        if not self.enabled:
            return None
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep:
            raise self._refusal("authentication required")
        key = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        if key in self._verified:
            return name
        stored = self.users.get(name)
        if stored is None or not verify_password(password, stored):
            raise self._refusal("invalid username or password")
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return name

    def _refusal(self, message: str) -> SwarmregError:
        return SwarmregError(UNAUTHORIZED, message, headers={"WWW-Authenticate": self.challenge})
