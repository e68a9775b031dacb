"""Docker's token authentication: scopes, and the bearer tokens the proxy's /token endpoint issues.

A token is a JWT signed with HMAC-SHA256 (clients treat it as opaque): who it is for, which
actions on which resources it grants, and when it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable

import attrs

# resource type : name : actions, e.g. "repository:library/app:pull,push" or "registry:catalog:*".
# The name is everything between the first colon and the last: an upstream's repository may carry
# its registry's port ("repository:127.0.0.1:5000/team/app:pull", as docker and containerd ask).
_SCOPE = re.compile(r"(?P<type>[a-z0-9]+)(?:\([a-z0-9]+\))?:(?P<name>\S+):(?P<actions>[a-z*]+(?:,[a-z*]+)*)")


@attrs.frozen
class Grant:
    """Actions on one resource: what a request needs, what a scope asks for, what a token allows."""

    type: str
    name: str
    actions: tuple[str, ...]

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def covers(self, needed: Grant) -> bool:
        return (self.type, self.name) == (needed.type, needed.name) and set(needed.actions) <= set(self.actions)


def parse_scope(scope: str) -> list[Grant]:
    """The grants a ``scope`` parameter asks for (space-separated scopes); malformed ones are skipped."""
    grants = []
    for part in scope.split():
        if (match := _SCOPE.fullmatch(part)) is not None:
            grants.append(Grant(match["type"], match["name"], tuple(dict.fromkeys(match["actions"].split(",")))))
    return grants


@attrs.frozen
class Claims:
    """What a verified token says."""

    user: str | None  # None: an anonymous token
    grants: tuple[Grant, ...]
    expires: float

    def allows(self, needed: Grant) -> bool:
        return any(grant.covers(needed) for grant in self.grants)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Signs and verifies this registry's tokens with one HMAC key (shared by every proxy of a realm)."""

    def __init__(self, secret: bytes, service: str, ttl: float) -> None:
        self._secret = secret
        self.service = service
        self.ttl = ttl

    def _sign(self, signing_input: bytes) -> str:
        return _b64(hmac.new(self._secret, signing_input, hashlib.sha256).digest())

    def issue(self, user: str | None, grants: Iterable[Grant], *, now: float | None = None) -> tuple[str, int]:
        """A token for ``user`` with ``grants``; returns it and its lifetime in seconds."""
        issued = int(time.time() if now is None else now)
        payload = {"iss": "swarmreg", "sub": user or "", "aud": self.service, "iat": issued,
                   "exp": issued + int(self.ttl),
                   "access": [{"type": g.type, "name": g.name, "actions": list(g.actions)} for g in grants]}
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{header}.{body}".encode()
        return f"{header}.{body}.{self._sign(signing_input)}", int(self.ttl)

    def verify(self, token: str, *, now: float | None = None) -> Claims | None:
        """The token's claims if this issuer signed it for this service and it has not expired."""
        try:
            header, body, signature = token.split(".")
            if not hmac.compare_digest(signature, self._sign(f"{header}.{body}".encode())):
                return None
            payload = json.loads(_unb64(body))
            if payload["aud"] != self.service or payload["exp"] <= (time.time() if now is None else now):
                return None
            grants = tuple(Grant(a["type"], a["name"], tuple(a["actions"])) for a in payload["access"])
            return Claims(payload["sub"] or None, grants, float(payload["exp"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
