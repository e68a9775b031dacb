"""Checks for what arrives at the index: digests, pagination, JSON bodies; names and tags are
checked by swarmreg.oci.names (re-exported here for the index's modules)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any

from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, SwarmregError
from swarmreg.oci.names import validate_repository, validate_tag
from swarmreg.oci.pagination import parse_page_size

__all__ = ["check_annotations", "check_body", "check_media_type", "check_size", "parse_digest",
           "parse_page_size", "query_text", "validate_repository", "validate_tag"]

# type/subtype as in RFC 6838, optionally with parameters ("; charset=utf-8").
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                         r"(?:\s*;[\x20-\x7e]*)?")
MAX_MEDIA_TYPE_LENGTH = 255
# Sizes are 64-bit signed integers in both stores.
MAX_SIZE = 2 ** 63 - 1
# A free-text query parameter (a listing's ``last``, a filter): printable, and not endless.
_QUERY_TEXT = re.compile(r"[^\x00-\x1f\x7f]{0,1024}")


def parse_digest(text: Any, field: str = "digest") -> Digest:
    """A ``sha256:<hex>`` or ``sha512:<hex>`` digest from a URL or a JSON field; DIGEST_INVALID otherwise."""
    if not isinstance(text, str):
        raise SwarmregError(BAD_REQUEST, f"{field} must be a string", {field: text})
    return Digest.parse(text)


def check_media_type(value: Any, field: str) -> str:
    """``value`` if it is a ``type/subtype`` string, else BAD_REQUEST naming ``field``."""
    if not isinstance(value, str) or len(value) > MAX_MEDIA_TYPE_LENGTH or not _MEDIA_TYPE.fullmatch(value):
        raise SwarmregError(BAD_REQUEST, f"{field} must be a media type (type/subtype)", {field: value})
    return value


def check_size(value: Any, field: str = "size") -> int:
    """``value`` if it is an integer >= 0, else BAD_REQUEST."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise SwarmregError(BAD_REQUEST, f"{field} must be an integer from 0 to 2^63-1", {field: str(value)[:100]})
    return value


def query_text(value: str | None, field: str) -> str | None:
    """A free-text query parameter (None when absent), else BAD_REQUEST: at most 1024 characters,
    none a control character (a NUL, which PostgreSQL's text cannot hold)."""
    if value is not None and not _QUERY_TEXT.fullmatch(value):
        raise SwarmregError(BAD_REQUEST, f"{field} must be at most 1024 characters, none a control character")
    return value


def check_annotations(value: Any) -> dict[str, str]:
    """OCI annotations: an object of strings to strings (null reads as none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in value.items()):
        raise SwarmregError(BAD_REQUEST, "annotations must be an object of strings")
    return dict(value)


def check_body(body: Any, required: Set[str], optional: Set[str] = frozenset()) -> Mapping[str, Any]:
    """A JSON object with every ``required`` key and no key outside ``required | optional``."""
    if not isinstance(body, Mapping):
        raise SwarmregError(BAD_REQUEST, "the body must be a JSON object")
    if missing := sorted(required - body.keys()):
        raise SwarmregError(BAD_REQUEST, f"missing field(s): {', '.join(missing)}")
    if unknown := sorted(body.keys() - required - optional):
        raise SwarmregError(BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
    return body
