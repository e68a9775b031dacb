"""What selects manifests for pruning and listing, shared by the index and the proxy's admin API
(free of any web framework): prune types, reference patterns, counts.

Patterns are ociregistry's: regular expressions, comma-separated, each *searched for* in a
manifest's references (Go's ``regexp.MatchString``, which is unanchored: ``docker.io`` matches
every image from Docker Hub, ``curl,cilium`` either name); anchor one with ``^...$`` to match a
whole reference. A manifest's references are ``repository:tag`` for each of its tags and
``repository@digest``. Python's ``re`` syntax, which for the patterns people write is Go's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from swarmreg.errors import BAD_REQUEST, SwarmregError

PRUNE_TYPES = ("accessed", "created", "pattern")
# At most this many patterns of at most this many characters (references are at most ~400).
MAX_PATTERNS = 64
MAX_PATTERN_LENGTH = 1024
# -1 as a count: no limit (ociregistry's).
UNLIMITED = -1


def bad_parameter(name: str, message: str) -> SwarmregError:
    """400 BAD_REQUEST naming the parameter (never echoing more than a little of its value)."""
    return SwarmregError(BAD_REQUEST, f"{name}: {message}", {"parameter": name})


def parse_patterns(text: str | None, name: str = "pattern") -> tuple[re.Pattern[str], ...]:
    """The comma-separated regular expressions of ``text`` (empty parts skipped: an empty one would
    match everything); none for None or ""."""
    if not text:
        return ()
    parts = [part for part in text.split(",") if part]
    if len(parts) > MAX_PATTERNS:
        raise bad_parameter(name, f"at most {MAX_PATTERNS} patterns")
    compiled = []
    for part in parts:
        if len(part) > MAX_PATTERN_LENGTH:
            raise bad_parameter(name, f"a pattern is at most {MAX_PATTERN_LENGTH} characters")
        try:
            compiled.append(re.compile(part))
        except re.error as error:
            raise bad_parameter(name, f"not a regular expression ({error})") from None
    return tuple(compiled)


def parse_count(text: str | None, default: int | None, name: str = "count") -> int | None:
    """A count parameter: a whole number, -1 for no limit (None); absent: ``default``."""
    if text is None or text == "":
        return default
    stripped = text.strip()
    if not re.fullmatch(r"-?\d{1,12}", stripped) or int(stripped) < UNLIMITED:
        raise bad_parameter(name, "expected a whole number, or -1 for no limit")
    return None if int(stripped) == UNLIMITED else int(stripped)


def matches(patterns: Iterable[re.Pattern[str]], references: Iterable[str]) -> bool:
    """Whether any pattern is found in any reference."""
    references = tuple(references)
    return any(pattern.search(reference) for pattern in patterns for reference in references)


def references(repository: str, digest: str, tags: Iterable[str]) -> list[str]:
    """A manifest's references as patterns see them: ``repository:tag`` each, ``repository@digest``."""
    return [*(f"{repository}:{tag}" for tag in tags), f"{repository}@{digest}"]
