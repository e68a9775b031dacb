"""What the index's tests share: media types and made-up digests."""

from __future__ import annotations

from swarmreg.digest import Digest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(n: object) -> Digest:
    """A digest named by ``n`` (the sha256 of its text)."""
    return Digest.of(str(n).encode())
