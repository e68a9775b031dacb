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

# The admin endpoints (swarmreg.index.admin_routes): POST a prune (a write: proxy and index roles),
# GET the lists (parameters pattern, digest, substr, count as the proxy's /cmd/... take them).
ADMIN_PRUNE = "/admin/prune"
ADMIN_IMAGES = "/admin/images"
ADMIN_MANIFESTS = "/admin/manifests"
ADMIN_BLOBS = "/admin/blobs"
# GET: the replication queue (swarmreg replication status), `count` repositories at most
# (REPLICATION_COUNT unless given; -1: all): {"remotes": [{"remote", "configured", "pending",
# "repositories", "oldest", "queues": [{"repository", "pending", "oldest", "tag", "digest",
# "attempts", "next_attempt", "last_error", "sending"}]}], "truncated"}.
ADMIN_REPLICATION = "/admin/replication"
REPLICATION_COUNT = 1000

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


# Garbage collection (swarmreg.index.gc), for the origin's collector:
# POST GC_MARK?grace=<seconds>&dry_run= removes the blob links older than grace that no manifest
# of their repository references (none with dry_run) and answers the live set, one digest a line
# (how many in GC_LIVE; the links removed in GC_LINKS_REMOVED), then the released digests that are
# not live as "@<time> <digest>" lines (GC_RELEASED); GC_REFS_UNKNOWN while some manifest's
# references are unknown. GET GC_UNKNOWN?n=&last= pages through those manifests (`last` is
# "<repository>@<digest>"); POST GC_REFS {"repository", "digest", "blobs", "children"} records one's.
GC_MARK = "/gc/mark"
GC_UNKNOWN = "/gc/unknown"
GC_REFS = "/gc/refs"
GC_GRACE = "grace"
GC_DRY_RUN = "dry_run"
GC_LIVE = "Gc-Live"
GC_LINKS_REMOVED = "Gc-Links-Removed"
GC_RELEASED = "Gc-Released"
# Set (to the reason) when the index could remove no link (its disk is full): every link was live.
GC_LINKS_KEPT = "Gc-Links-Kept"
# Suffixes of a blob link's path (record_path(repository, BLOBS, digest)), both POST: renew the
# link if it exists (a push's HEAD found the layer: it must outlive the grace period until the
# manifest PUT), and link the blob here if it is linked in the repository MOUNT_FROM names, in
# one transaction each, ordered against a mark. 200 with BLOB_SIZE, 404 BLOB_UNKNOWN otherwise.
RENEW = "/renew"
MOUNT = "/mount"
MOUNT_FROM = "from"
