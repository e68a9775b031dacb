"""Byte ranges: the HTTP ``Range`` request header and Kraken's upload ``Content-Range``."""

from __future__ import annotations

import re

from swarmreg.errors import BLOB_UPLOAD_INVALID, RANGE_INVALID, SwarmregError
from swarmreg.store.files import ByteRange

_HTTP_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_KRAKEN_RANGE = re.compile(r"(\d{1,19})[,-](\d{1,19})")
# More digits than this is past any blob: int() of 4301 digits would raise (a 500), and a
# huge number costs time to convert.
_MAX_DIGITS = 19
_PAST_ANY_SIZE = 1 << 64


def _position(digits: str) -> int:
    """A byte position of a Range header; one too long to be a size is past every blob."""
    significant = digits.lstrip("0")
    return _PAST_ANY_SIZE if len(significant) > _MAX_DIGITS else int(significant or "0")


def parse_range_header(value: str | None, size: int) -> ByteRange | None:
    """Resolve a ``Range`` header against a blob of ``size`` bytes.

    Returns None when the whole blob should be sent: no header, a header in a
    form we do not serve (several ranges, another unit), which RFC 9110 lets a
    server ignore. Raises RANGE_INVALID (416) when the range cannot be satisfied.
    """
    if not value:
        return None
    match = _HTTP_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = _position(last)
        if suffix == 0:
            raise SwarmregError(RANGE_INVALID, "empty suffix range", {"range": value, "size": size})
        if size == 0:  # satisfiable (RFC 9110 14.1.2) but no 206 can describe zero bytes: send it whole
            return None
        return ByteRange(max(0, size - suffix), size)
    start = _position(first)
    end = size if not last else min(_position(last) + 1, size)
    if start >= size or (last and _position(last) < start):
        raise SwarmregError(RANGE_INVALID, "range not satisfiable", {"range": value, "size": size})
    return ByteRange(start, end)


def parse_upload_range(value: str | None) -> ByteRange:
    """Kraken's chunk header ``Content-Range: start,end`` (or ``start-end``): bytes [start, end)."""
    if not value:
        raise SwarmregError(BLOB_UPLOAD_INVALID, "missing Content-Range header: expected 'start,end'")
    match = _KRAKEN_RANGE.fullmatch(value.strip())
    if match is None:
        raise SwarmregError(
            BLOB_UPLOAD_INVALID, "malformed Content-Range: expected 'start,end'", {"content_range": value[:100]})
    start, end = int(match[1]), int(match[2])
    if end <= start:
        raise SwarmregError(
            RANGE_INVALID, "Content-Range end must be greater than start", {"content_range": value})
    return ByteRange(start, end)


_OCI_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/\*|/\d{1,19})?")


def parse_chunk_range(value: str) -> ByteRange:
    """An OCI upload chunk's ``Content-Range: start-end`` (end inclusive), as [start, end + 1)."""
    match = _OCI_CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise SwarmregError(RANGE_INVALID, "malformed Content-Range: expected 'start-end'",
                            {"content_range": value[:100]})
    start, last = int(match[1]), int(match[2])
    if last < start:
        raise SwarmregError(RANGE_INVALID, "Content-Range end is before its start", {"content_range": value})
    return ByteRange(start, last + 1)
