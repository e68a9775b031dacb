"""Durations as ociregistry writes them (``30d``, ``12h``, ``90m``), shared by the configuration,
the admin API and the command line.

A duration is a number of seconds (an integer or a float, as TOML gives them) or a string of one
or more ``<integer><unit>`` parts, units ``s``, ``m``, ``h``, ``d`` (``1h30m``, ``45s``); a bare
number in a string is seconds. Negative durations are refused.
"""

from __future__ import annotations

import math
import re
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Longer than any retention anyone means (about 31,700 years): keeps datetime arithmetic in range.
MAX_SECONDS = 1e12


def parse_duration(value: Any, _type: Any = None) -> float:
    """Seconds in ``value`` (see the module's docstring); ValueError says what a duration looks like."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _PART.sub("", text) == "":
            seconds = float(sum(int(count) * _UNITS[unit] for count, unit in _PART.findall(text)))
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"expected a duration like '30d', '12h', '90m' or a number of seconds, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it (``2592000`` -> ``30d``), else ``<n>s``."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
