"""The origin's wire contract: paths, headers and ids that its server and its clients share.

Kraken's origin endpoints (its endpoint documentation): blobs by namespace and digest,
chunked uploads of a known digest, and torrent metainfo; plus sessions whose digest
comes only at the commit, for the proxy's Docker pushes.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from swarmreg.digest import Digest

# Quart route of a blob; a client builds the same path with blob_path.
BLOB_ROUTE = "/namespace/<path:namespace>/blobs/<digest>"
UPLOADS = "/uploads"  # suffix of BLOB_ROUTE: Kraken's uploads of a known digest
# One such upload: PATCH a chunk (Content-Range: start,end), PUT to commit, GET (or HEAD) for
# where it stands: 204 with UPLOAD_SIZE, the offset the next chunk starts at (how a push resumes).
UPLOAD_ROUTE = f"{BLOB_ROUTE}{UPLOADS}/<uid>"
METAINFO = "/metainfo"  # suffix of BLOB_ROUTE: the blob's torrent
METAINFO_TYPE = "application/x-bittorrent"
# Sessions whose digest is known only at the end: POST SESSIONS, then SESSIONS/<uid>.
SESSIONS = "/uploads"

# An upload id (a UUID4 in its canonical text form); nothing else may steer a path or URL.
UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# How many bytes of a session have arrived: the end of its last chunk (the proxy turns it into its
# Range header; `swarmreg blob push` resumes there).
UPLOAD_SIZE = "Upload-Size"
# A committed blob's size, in the commit's answer.
BLOB_SIZE = "Blob-Size"
# An origin's metainfo response names the peer that seeds the blob, for the tracker.
PEER_ID_HEADER = "Swarm-Peer-Id"
PEER_PORT_HEADER = "Swarm-Peer-Port"

# How long a client waits for the answer to a request that may make the origin fetch the blob from
# its backend first (metainfo, a read of a blob it lacks): an upstream registry's 3 GB layer takes
# minutes. A fetch that stalls fails on its own (the backend's read timeout), and so answers.
FETCH_WAIT = 3600.0

# Query parameters: `through=true` also writes the blob to the namespace's backend;
# `local=true` (on HEAD and GET) asks about the origin's own store only: no fetch from its backend or
# another origin (what origins ask each other, so that two that both miss never wait on each other).
THROUGH = "through"
LOCAL = "local"
# On a commit (PUT of an upload): the blob is a replica another origin sends, which this origin
# does not replicate further (the sender sends it to every owner).
REPLICA = "replica"
# `wait=false` (on GET METAINFO) asks without waiting for a fetch from the backend: 200 with the
# metainfo when the blob is held, or RELAY_PENDING with the blob's size in BLOB_SIZE while it is
# fetched (the asker may then stream the blob from the origin as it arrives).
WAIT = "wait"
RELAY_PENDING = 202

# One garbage collection, now (POST; for the proxy and origin roles): `dry_run=true` reports what
# it would remove and removes nothing. The answer is a JSON report (swarmreg.gc's GcReport).
GC = "/gc"
DRY_RUN = "dry_run"
# How long a client waits for a collection's report: a sweep of a large store takes minutes.
GC_WAIT = 1800.0


def blob_path(namespace: str, digest: Digest, suffix: str = "") -> str:
    """The path of a blob (``suffix``: UPLOADS, METAINFO) on an origin or an agent."""
    return f"/namespace/{quote(namespace, safe='')}/blobs/{digest}{suffix}"


def session_path(uid: str) -> str:
    """The path of a session opened at SESSIONS; ``uid`` must match UPLOAD_ID."""
    return f"{SESSIONS}/{uid}"
