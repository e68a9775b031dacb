"""Byte counts as the configuration writes them (``4194304``, ``"4MiB"``, ``"1GB"``), in a module of
their own so that storage backends' options, which may not import swarmreg.config, take them too."""

from __future__ import annotations

import re
from typing import Any, NewType

ByteSize = NewType("ByteSize", int)
_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(value: Any, _type: Any = None) -> ByteSize:
    """A byte count from an integer or a string such as ``"256MiB"`` or ``"1GB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return ByteSize(value)
    if isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        return ByteSize(int(match[1]) * _UNITS[(match[2] or "b").lower()])
    raise ValueError(f"expected a size in bytes (an integer or a string like '4MiB'), got {value!r}")
