"""The index's wire contract: paths, headers and limits its server and its clients share.

Repository names contain slashes. Where a path could be read two ways, the rules are: a
digest segment has a colon (so ``/repositories/a/blobs/tags`` is the tag list of ``a/blobs``),
and ``/repositories/a/tags/t`` is tag ``t`` of ``a``; the tag list of a repository whose last
path component is ``tags`` is also served at ``/repositories/<r>/tags/-/list`` (no tag is ``-``).
"""

from __future__ import annotations

import re

from swarmreg.digest import Digest
from swarmreg.oci.manifest import MAX_MANIFEST_SIZE

CATALOG = "/repositories"
REPOSITORY_ROUTE = "/repositories/<path:repository>"
# The kinds of record kept per repository and digest: /repositories/<r>/<kind>/<digest>.
MANIFESTS, BLOBS, REFERRERS = "manifests", "blobs", "referrers"

# Seconds the index's clients (the proxy, agents) wait for an answer; the index answers before
# that even when an upstream it asks hangs (swarmreg.index.pullthrough.UPSTREAM_WAIT).
CLIENT_TIMEOUT = 30.0

# A push about to store a digest at the origin: PUT (noted, `ttl` seconds at most) and DELETE
# (over), with the push's `token` (a request's own, PENDING_TOKEN). Garbage collection keeps it.
PENDING_ROUTE = "/pending/<digest:digest>"
PENDING_TOKEN = re.compile(r"[0-9a-f]{32}")
# How long a push's note holds when the proxy never clears it (it died mid-push).
PENDING_TTL = 3600.0

BLOB_SIZE = "Blob-Size"
MANIFEST_MEDIA_TYPE = "Manifest-Media-Type"
MANIFEST_SIZE = "Manifest-Size"

# Bodies are small JSON documents, but a manifest record carries the manifest's annotations, which
# may fill nearly all of a manifest of the largest size a registry must accept (4 MiB). The proxy
# encodes them without escaping non-ASCII, so they take at most as many bytes as in the manifest;
# the rest leaves room for the record's other fields.
MAX_BODY_SIZE = MAX_MANIFEST_SIZE + (64 << 10)


def pending_path(digest: Digest | str) -> str:
    return f"/pending/{digest}"


def tags_path(repository: str) -> str:
    """The repository's tag list (the ``/-/list`` spelling when it could be read as a tag)."""
    return f"/repositories/{repository}/tags" + ("/-/list" if repository.endswith("/tags") else "")


def tag_path(repository: str, tag: str) -> str:
    return f"/repositories/{repository}/tags/{tag}"


def record_path(repository: str, kind: str, digest: Digest | str) -> str:
    """A manifest record, blob link or referrers list (``kind``) of ``digest`` in the repository."""
    return f"/repositories/{repository}/{kind}/{digest}"
