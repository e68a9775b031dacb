"""The one registry of error codes that every HTTP port answers with.

Registry ports speak the OCI distribution spec's envelope
``{"errors": [{"code", "message", "detail"}]}``; the origin, index and tracker
HTTP APIs use the same envelope so every client parses one format.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class ErrorCode:
    """A named error: the spec's code string, its HTTP status and a default message."""

    code: str
    status: int
    message: str


_REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, status: int, message: str) -> ErrorCode:
    if code in _REGISTRY:
        raise ValueError(f"error code {code} registered twice")
    _REGISTRY[code] = ErrorCode(code, status, message)
    return _REGISTRY[code]


def error_code(code: str) -> ErrorCode:
    """Look a registered code up by its name (KeyError if unknown)."""
    return _REGISTRY[code]


def registered_codes() -> tuple[ErrorCode, ...]:
    """Every registered code, in registration order."""
    return tuple(_REGISTRY.values())


# Codes from the OCI distribution spec.
BLOB_UNKNOWN = _register("BLOB_UNKNOWN", 404, "blob unknown to registry")
BLOB_UPLOAD_INVALID = _register("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BLOB_UPLOAD_UNKNOWN = _register("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DIGEST_INVALID = _register("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
MANIFEST_UNKNOWN = _register("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
NAME_INVALID = _register("NAME_INVALID", 400, "invalid repository name")
NAME_UNKNOWN = _register("NAME_UNKNOWN", 404, "repository name not known to registry")
PAGINATION_NUMBER_INVALID = _register("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
SIZE_INVALID = _register("SIZE_INVALID", 400, "provided length did not match content length")
UNSUPPORTED = _register("UNSUPPORTED", 405, "the operation is unsupported on this path")
# Manifest, auth and rate codes, with the statuses and messages of CNCF distribution's errcode
# (MANIFEST_BLOB_UNKNOWN takes the spec's wording: distribution's repeats BLOB_UNKNOWN's).
MANIFEST_BLOB_UNKNOWN = _register("MANIFEST_BLOB_UNKNOWN", 400,
                                  "manifest references a manifest or blob unknown to registry")
MANIFEST_INVALID = _register("MANIFEST_INVALID", 400, "manifest invalid")
MANIFEST_UNVERIFIED = _register("MANIFEST_UNVERIFIED", 400, "manifest failed signature verification")
TAG_INVALID = _register("TAG_INVALID", 400, "manifest tag did not match URI")
UNAUTHORIZED = _register("UNAUTHORIZED", 401, "authentication required")
DENIED = _register("DENIED", 403, "requested access to the resource is denied")
TOOMANYREQUESTS = _register("TOOMANYREQUESTS", 429, "too many requests")

# Codes of our own, for conditions the spec has no code for.
RANGE_INVALID = _register("RANGE_INVALID", 416, "requested range not satisfiable")
BLOB_EXISTS = _register("BLOB_EXISTS", 409, "blob already exists")
TOO_LARGE = _register("TOO_LARGE", 413, "content exceeds the configured limit")
NOT_FOUND = _register("NOT_FOUND", 404, "no such endpoint")
BAD_REQUEST = _register("BAD_REQUEST", 400, "malformed request")
BACKEND_ERROR = _register("BACKEND_ERROR", 502, "storage backend failed")
BAD_GATEWAY = _register("BAD_GATEWAY", 502, "an upstream service failed")
UNAVAILABLE = _register("UNAVAILABLE", 503, "service unavailable")
INTERNAL = _register("INTERNAL", 500, "internal server error")


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
