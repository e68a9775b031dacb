"""The one registry of error codes that every HTTP port answers with.

Registry ports speak the OCI distribution spec's envelope
``{"errors": [{"code", "message", "detail"}]}``; the origin, agent and index
HTTP APIs use the same envelope so every client parses one format, and the
tracker's failed replies carry the same codes.
"""

from __future__ import annotations

import errno
import logging
import uuid
from typing import Any, TypeGuard

import attrs

_log = logging.getLogger(__name__)


@attrs.frozen
class ErrorCode:
    """A named error: the spec's code string, its HTTP status, a default message, and a
    description for docs/errors.md (when a client gets it and what it means)."""

    code: str
    status: int
    message: str
    description: str = ""


_REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, status: int, message: str, description: str = "") -> ErrorCode:
    if code in _REGISTRY:
        raise ValueError(f"error code {code} registered twice")
    _REGISTRY[code] = ErrorCode(code, status, message, description)
    return _REGISTRY[code]


def error_code(code: str) -> ErrorCode:
    """Look a registered code up by its name (KeyError if unknown)."""
    return _REGISTRY[code]


def registered_codes() -> tuple[ErrorCode, ...]:
    """Every registered code, in registration order."""
    return tuple(_REGISTRY.values())


def markdown_table() -> str:
    """Every registered code as a Markdown table (code, status, message, description).

    scripts/gen_error_docs.py writes it into docs/errors.md; a test checks the two agree.
    """
    rows = ["| code | HTTP status | message | description |", "|---|---|---|---|"]
    for code in registered_codes():
        cells = (f"`{code.code}`", str(code.status), code.message, code.description)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


# Codes from the OCI distribution spec.
BLOB_UNKNOWN = _register(
    "BLOB_UNKNOWN", 404, "blob unknown to registry",
    "A GET or HEAD names a blob the repository does not have (registry ports), or that no origin "
    "and no backend of the namespace holds (the origin and agent blob APIs, the tracker's metainfo "
    "requests).")
BLOB_UPLOAD_INVALID = _register(
    "BLOB_UPLOAD_INVALID", 400, "blob upload invalid",
    "The upload cannot go on as sent: a PATCH to the origin's API without a well-formed "
    "`Content-Range: start,end`, a chunk or commit while the upload is being committed or still has "
    "chunks being written, or a request body that sent nothing for `http.idle_timeout`.")
BLOB_UPLOAD_UNKNOWN = _register(
    "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry",
    "No upload session has this id: it was never opened, was committed or cancelled, or sat idle "
    "past `origin.upload_ttl`; also a chunk still being written when its upload is cancelled (the "
    "chunk is dropped with the session).")
DIGEST_INVALID = _register(
    "DIGEST_INVALID", 400, "provided digest did not match uploaded content",
    "A digest is malformed or of an unsupported algorithm, an upload's bytes do not hash to the "
    "digest it is committed under (or the upload was opened for another digest), the commit has no "
    "`digest` parameter, or a manifest does not match the digest it is put under. swarmreg accepts "
    "the two algorithms the OCI image spec registers, sha256 (64 hex digits) and sha512 (128).")
MANIFEST_UNKNOWN = _register(
    "MANIFEST_UNKNOWN", 404, "manifest unknown to registry",
    "The repository has no manifest under this tag or digest (registry ports and the index), or a "
    "tag is set to a manifest the repository does not have.")
NAME_INVALID = _register(
    "NAME_INVALID", 400, "invalid repository name",
    "A repository name or namespace breaks the spec's grammar, or a registry request's `?ns=` is not "
    "one `host[:port]`; on the origin also a write-through "
    "(`?through=true`) to a namespace that no `[[backends]]` entry matches.")
NAME_UNKNOWN = _register(
    "NAME_UNKNOWN", 404, "repository name not known to registry",
    "The tag list of a repository that has no manifest and no blob link.")
PAGINATION_NUMBER_INVALID = _register(
    "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested",
    "A tag list or catalog request (registry ports and the index) has an `n` query parameter that "
    "is not an ASCII count from 0 to 10000.")
SIZE_INVALID = _register(
    "SIZE_INVALID", 400, "provided length did not match content length",
    "A chunk's body is longer or shorter than its Content-Range says; the chunk is not recorded.")
UNSUPPORTED = _register(
    "UNSUPPORTED", 405, "the operation is unsupported on this path",
    "The method is not allowed on this path, or a push reached an agent's registry port, which is "
    "read-only (push to the proxy), or a write or delete reached a read-only storage backend (an "
    "upstream registry's namespace: swarmreg only reads from upstreams).")
# Manifest, auth and rate codes, with the statuses and messages of CNCF distribution's errcode
# (MANIFEST_BLOB_UNKNOWN takes the spec's wording: distribution's repeats BLOB_UNKNOWN's).
MANIFEST_BLOB_UNKNOWN = _register(
    "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry",
    "A manifest pushed to the proxy references a blob or child manifest the repository does not "
    "have (push those first).")
MANIFEST_INVALID = _register(
    "MANIFEST_INVALID", 400, "manifest invalid",
    "A pushed manifest does not parse or validate (bad JSON, a missing or malformed field, a "
    "reference to itself, a schema 1 manifest); with status 413 when it is larger than "
    "`proxy.max_manifest_size`.")
MANIFEST_UNVERIFIED = _register(
    "MANIFEST_UNVERIFIED", 400, "manifest failed signature verification",
    "A signed manifest's signature does not verify. swarmreg verifies no signatures (it refuses "
    "schema 1 manifests with MANIFEST_INVALID), so it never answers this code.")
TAG_INVALID = _register(
    "TAG_INVALID", 400, "manifest tag did not match URI",
    "The tag breaks the spec's tag grammar (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).")
UNAUTHORIZED = _register(
    "UNAUTHORIZED", 401, "authentication required",
    "The proxy has `[proxy.users]` and the request has no valid credentials (basic auth), or no "
    "valid bearer token or one without the scope it needs (token auth); the WWW-Authenticate header "
    "says how to sign in. On an internal port (origin, index, tracker) without `[tls]`: a write "
    "without the cluster secret (`[cluster] secret`) as its bearer token, or with a wrong one.")
DENIED = _register(
    "DENIED", 403, "requested access to the resource is denied",
    "The user signed in but no `[[proxy.access]]` rule allows this action on this repository; or, on "
    "an internal port with `[tls]`, the caller's certificate lacks the role the write is for (index "
    "writes: proxy, index; origin uploads: proxy, origin; tracker origin announces: origin). On the "
    "proxy also a push (blob upload, mount into, manifest PUT) into an upstream registry's namespace "
    "(`docker.io/library/nginx`, `127.0.0.1:5000/team/app`, or a name with `?ns=`): swarmreg's copy is a "
    "read-only cache, so the message says to push to that registry; deletes are allowed and evict.")
TOOMANYREQUESTS = _register(
    "TOOMANYREQUESTS", 429, "too many requests",
    "Opening an upload session when `origin.max_sessions` sessions are open in all, or "
    "`origin.max_sessions_per_namespace` in the namespace (the repository): finish or cancel one, "
    "or wait the `Retry-After` seconds the answer carries (the proxy relays both). Or a client "
    "address failed to sign in `proxy.auth_failure_limit` times within `proxy.auth_failure_window` "
    "seconds: the proxy checks no password from it until the oldest failure ages out (the "
    "`Retry-After` header and `detail.retry_after` say when). The tracker never answers it: it "
    "slows a fast connection down (`tracker.frame_rate`) instead. Also a `POST /preheat` while "
    "`proxy.preheat_jobs` jobs run, or a prefetch asked of an agent running 64 already.")

# Codes of our own, for conditions the spec has no code for.
RANGE_INVALID = _register(
    "RANGE_INVALID", 416, "requested range not satisfiable",
    "A blob GET's Range lies outside the blob (the answer carries `Content-Range: bytes */SIZE`), "
    "an upload chunk does not start where the bytes received end or overlaps them, a chunk's "
    "Content-Range is malformed (registry ports) or ends before it starts, or a commit finds gaps "
    "in the upload.")
BLOB_EXISTS = _register(
    "BLOB_EXISTS", 409, "blob already exists",
    "Opening an upload on the origin's blob API for a blob the origin already holds, as Kraken "
    "answers: there is nothing to upload (a missing backend copy is written first).")
TOO_LARGE = _register(
    "TOO_LARGE", 413, "content exceeds the configured limit",
    "An upload would pass `origin.max_upload_size`, a request body to the index passes its "
    "limit, a `POST /token` form is over 8 KiB, or a `POST /preheat` body is over 1 MiB or names "
    "more than 1000 images.")
JOB_UNKNOWN = _register(
    "JOB_UNKNOWN", 404, "job unknown",
    "`GET /preheat/<id>` on the proxy names no preheat job it knows: the id is malformed, was never "
    "given, or its job finished longer ago than the proxy keeps jobs (an hour, the latest 100). On an "
    "agent's blob API, a prefetch status read for a blob the agent was not asked to prefetch (lately) "
    "and does not hold.")
NOT_FOUND = _register(
    "NOT_FOUND", 404, "no such endpoint",
    "No route on this port matches the path; on the proxy also `/token` when `proxy.auth` is "
    "\"basic\".")
BAD_REQUEST = _register(
    "BAD_REQUEST", 400, "malformed request",
    "A request the spec has no code for is malformed: a bad index request body or field, a "
    "boolean query parameter that is not true or false, the metainfo of the empty blob (which "
    "has no torrent), or a `POST /preheat` body that is no JSON object of `images` (references), "
    "`platform` (os/arch[/variant]) and `agents` (a count or \"all\").")
BACKEND_ERROR = _register(
    "BACKEND_ERROR", 502, "storage backend failed",
    "The origin's storage backend failed or returned bytes that do not match the digest; an S3 "
    "backend's bucket refused the credentials, does not exist, or found none to use; an HTTP "
    "backend answered a status it should not. The message names the bucket or the backend's host, "
    "never a credential or a key. When a write-through fails after the commit, the blob is held "
    "locally, and opening its upload again retries the backend write.")
BACKEND_UNAVAILABLE = _register(
    "BACKEND_UNAVAILABLE", 503, "storage backend out of reach",
    "The origin's storage backend (an S3 endpoint, an HTTP backend) could not be reached: the "
    "connection was refused or cut, it did not answer within its `connect_timeout` / "
    "`read_timeout` after its `attempts`, or it answered 5xx (S3's SlowDown). Nothing half-written "
    "is left under the digest; retrying later may succeed, and blobs held locally are served meanwhile.")
BAD_GATEWAY = _register(
    "BAD_GATEWAY", 502, "an upstream service failed",
    "Another node failed this one: an origin could not be reached or answered something "
    "unexpected, the index answered something unexpected, no origin could give the tracker a "
    "blob's metainfo, the tracker sent metainfo that is no torrent of the blob, a torrent's "
    "metainfo is not rooted at this cluster's CA, or an origin or the "
    "index refused this node's cluster credentials (a wrong `[cluster] secret`, a certificate "
    "without the role; detail `upstream` names their code).")
UNAVAILABLE = _register(
    "UNAVAILABLE", 503, "service unavailable",
    "A node needed for the answer is out of reach or stopping: the tracker or index did not answer "
    "after retries, the tracker has no origin to ask, a download got no piece for "
    "`agent.stall_timeout`, the index's PostgreSQL database (`index.database`) is out of reach or "
    "too busy (its writes kept conflicting), or the daemon is shutting down. Retrying later may succeed.")
UPSTREAM_UNAVAILABLE = _register(
    "UPSTREAM_UNAVAILABLE", 503, "an upstream registry is out of reach",
    "An upstream registry (a `[[registries]]` entry, or an anonymous HTTPS one) could not be "
    "reached: the connection was refused, TLS failed, or it did not answer within its "
    "`connect_timeout` / `read_timeout`. The message names the upstream; retrying later may succeed.")
UPSTREAM_ERROR = _register(
    "UPSTREAM_ERROR", 502, "an upstream registry answered unexpectedly",
    "An upstream registry refused our credentials, its token realm gave no token, or it answered "
    "with a status or body the Registry V2 API does not allow (a digest that does not match). "
    "The message names the upstream and its status, never a credential.")
PEER_ID_TAKEN = _register(
    "PEER_ID_TAKEN", 409, "peer id belongs to another peer",
    "A tracker announce names a peer id that another open connection or an origin announced, or a "
    "second peer id on a connection that already announced one (a connection is one peer). Nothing "
    "is recorded; a connection's id is free again once it closes, and an origin's changes only when "
    "the tracker asks the origins again.")
GC_REFS_UNKNOWN = _register(
    "GC_REFS_UNKNOWN", 409, "manifests with unknown references",
    "The index was asked for a garbage collection's mark while it holds manifests recorded "
    "before index schema 2, whose references it has not read yet: the origin's collector reads "
    "them from the manifests' bytes first, and sweeps nothing until every one is known.")
STORAGE_FULL = _register(
    "STORAGE_FULL", 507, "insufficient storage",
    "The node's disk (or its quota) is full: an upload chunk, an upload's commit, a blob fetched "
    "from a backend, an agent's download or the index's database could not be written (ENOSPC, "
    "EDQUOT, SQLITE_FULL). Nothing partial is kept under a digest; "
    "the chunk is not recorded and the session stays open, so the client may retry once space is "
    "freed. The daemon keeps serving the blobs it holds. On an agent with `agent.cache.max_size`, "
    "also a pull of a blob larger than that limit, or one for which no room could be made within "
    "`agent.stall_timeout` because every held blob was being read or written (docs/cache.md).")
BLOB_IN_USE = _register(
    "BLOB_IN_USE", 409, "blob in use",
    "`DELETE /cmd/evict` on an agent's blob port names a blob that a response is streaming or a "
    "download is writing: it is not evicted (try again once the transfer ended). See docs/cache.md.")
INTERNAL = _register(
    "INTERNAL", 500, "internal server error",
    "A bug or an operating system error while serving the request, or a swarm download whose bytes "
    "did not match the blob's digest (the response is cut and the file dropped). The answer says "
    "nothing of the cause but an `error_id` (in the message and the detail); the daemon's log has "
    "the traceback under that id.")


class SwarmregError(Exception):
    """An error that maps onto one registered code, with an optional detail."""

    def __init__(self, code: ErrorCode, message: str | None = None, detail: Any = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.headers = headers or {}  # sent with the error response (e.g. WWW-Authenticate)
        # Where the spec pairs a code with another status than its usual one (a manifest over
        # the size limit: 413 with MANIFEST_INVALID, as the spec has no code of its own for it).
        self._status = status

    @property
    def status(self) -> int:
        return self._status or self.code.status

    def envelope(self) -> dict[str, Any]:
        """The spec's JSON error envelope for this error."""
        entry: dict[str, Any] = {"code": self.code.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}


def internal_error(log: logging.Logger, what: str, error: BaseException | None = None) -> SwarmregError:
    """INTERNAL for ``error`` (by default the exception being handled): its traceback goes to
    ``log`` (with ``what``) under a new error id, and the answer carries only that id, never the
    exception's text, which may name a file of the data directory, an address or a secret."""
    error_id = uuid.uuid4().hex[:16]
    log.error("%s (error id %s)", what, error_id, exc_info=error if error is not None else True)
    return SwarmregError(INTERNAL, f"internal server error (error id {error_id})", {"error_id": error_id})


# The errno values that mean "no space left": the disk is full, or the user's quota is.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_storage_full(error: BaseException) -> TypeGuard[OSError]:
    """Whether ``error`` is an OSError saying the disk or the quota is full."""
    return isinstance(error, OSError) and error.errno in _FULL


def os_error(error: OSError, what: str) -> SwarmregError:
    """The SwarmregError an operating system ``error`` while doing ``what`` is answered with.

    STORAGE_FULL for a full disk or quota, naming the errno's meaning only, never the file (an
    answer carries no path of the node's); anything else is INTERNAL with an error id, its
    traceback logged under that id.
    """
    if is_storage_full(error):
        return SwarmregError(STORAGE_FULL, f"{what}: {error.strerror or type(error).__name__}")
    return internal_error(_log, what, error)


def log_failure(logger: logging.Logger, what: str, error: Exception) -> None:
    """Log why background work (``what``) failed, as it goes on: a SwarmregError by its message,
    a full disk as the operator's problem it is, anything else with its traceback (a bug)."""
    if isinstance(error, SwarmregError):
        logger.warning("%s: %s", what, error.message)
    elif is_storage_full(error):
        logger.error("%s: %s", what, os_error(error, "disk full").message)
    else:
        logger.exception("%s failed unexpectedly", what)
