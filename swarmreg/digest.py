"""The Digest value type: parse, validate, hash.

Two algorithms are supported, the two the OCI image spec registers: ``sha256`` (64 lowercase
hex digits, the canonical one: what swarmreg computes when it names content itself) and
``sha512`` (128 lowercase hex digits, which the distribution spec lets a client choose).
"""

from __future__ import annotations

import hashlib
import re

import attrs

from swarmreg.errors import DIGEST_INVALID, SwarmregError

# algorithm -> the number of lowercase hex digits of its encoded part (image-spec "Registered algorithms").
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
ALGORITHMS: dict[str, re.Pattern[str]] = {
    algorithm: re.compile(f"[0-9a-f]{{{length}}}") for algorithm, length in HEX_LENGTHS.items()}
CANONICAL = "sha256"
# The longest digest text ("sha512:" and 128 hex digits: 135 characters).
MAX_DIGEST_LENGTH = max(len(algorithm) + 1 + length for algorithm, length in HEX_LENGTHS.items())
# The spec's grammar for any digest: algorithm ":" encoded.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def new_hasher(algorithm: str = CANONICAL) -> hashlib._Hash:
    """A fresh hashlib object for a supported algorithm."""
    if algorithm not in ALGORITHMS:
        raise SwarmregError(DIGEST_INVALID, f"unsupported digest algorithm {algorithm!r}",
                            {"algorithm": str(algorithm)[:50]})
    return hashlib.new(algorithm)


@attrs.frozen(order=True)
class Digest:
    """A content digest: ``sha256`` (canonical) or ``sha512``.

    ``hex`` alone names a blob on disk and in the swarm: the two algorithms' hex lengths
    differ (64, 128), so no sha256 hex is ever a sha512 hex.
    """

    hex: str
    algorithm: str = CANONICAL

    def __attrs_post_init__(self) -> None:
        pattern = ALGORITHMS.get(self.algorithm) if isinstance(self.algorithm, str) else None
        if pattern is None:
            raise SwarmregError(DIGEST_INVALID, f"unsupported digest algorithm {self.algorithm!r}",
                                {"algorithm": str(self.algorithm)[:50]})
        if not isinstance(self.hex, str) or not pattern.fullmatch(self.hex):
            raise SwarmregError(DIGEST_INVALID, "invalid digest", {"digest": str(self.hex)[:200]})

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<64 lowercase hex>`` or ``sha512:<128 lowercase hex>``.

        Anything else raises DIGEST_INVALID: a malformed digest, a wrong length, or an
        algorithm other than those two (its message then says "unsupported").
        """
        if not isinstance(text, str) or not _ANY_DIGEST.fullmatch(text):
            raise SwarmregError(DIGEST_INVALID, "malformed digest", {"digest": str(text)[:200]})
        algorithm, _, encoded = text.partition(":")
        if algorithm not in ALGORITHMS:
            raise SwarmregError(
                DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r}: only {' and '.join(ALGORITHMS)} are supported",
                {"digest": text[:200]},
            )
        return cls(encoded, algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = CANONICAL) -> Digest:
        """The digest of a bytes object (for small content only)."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(hasher.hexdigest(), algorithm)

    def hasher(self) -> hashlib._Hash:
        """A fresh hashlib object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
