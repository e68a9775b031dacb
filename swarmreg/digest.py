"""The Digest value type: parse, validate, hash."""

from __future__ import annotations

import hashlib
import re

import attrs

from swarmreg.errors import DIGEST_INVALID, SwarmregError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The spec's grammar for any digest: algorithm ":" encoded.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@attrs.frozen(order=True)
class Digest:
    """A sha256 content digest (the only algorithm swarmreg stores blobs under)."""

    hex: str = attrs.field()

    @hex.validator
    def _check(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not _SHA256_HEX.fullmatch(value):
            raise SwarmregError(DIGEST_INVALID, "invalid digest", {"digest": value})

    algorithm = "sha256"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<64 lowercase hex>``; anything else raises DIGEST_INVALID."""
        if not isinstance(text, str) or not _ANY_DIGEST.fullmatch(text):
            raise SwarmregError(DIGEST_INVALID, "malformed digest", {"digest": str(text)[:200]})
        algorithm, _, encoded = text.partition(":")
        if algorithm != cls.algorithm:
            raise SwarmregError(
                DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r}: only sha256 is supported",
                {"digest": text[:200]},
            )
        return cls(encoded)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of a bytes object (for small content only)."""
        return cls(hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
