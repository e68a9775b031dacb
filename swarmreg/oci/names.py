"""Repository names, tags and manifest references, by the distribution spec's grammar."""

from __future__ import annotations

import re

from swarmreg.digest import Digest
from swarmreg.errors import NAME_INVALID, TAG_INVALID, SwarmregError
from swarmreg.names import MAX_NAME_LENGTH

# The distribution spec's <name> grammar: lowercase alphanumeric components joined by ".", "_",
# "__" or runs of "-", separated by single slashes. No empty, "." or ".." component can match,
# so a valid name is also a safe relative path.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# A pull-through cache names an upstream's image ``<host[:port]>/<repo>`` (docker's own reading of
# a reference), so a first component may carry a port: ``127.0.0.1:5000/team/app``.
_PORT = r"(?::[0-9]{1,5}/)"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:{_PORT}{_COMPONENT})?(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_TAG_LENGTH = 128


def validate_repository(name: str) -> str:
    """Return ``name`` if it is a valid repository name (e.g. ``library/ubuntu``), else NAME_INVALID."""
    # The length check comes first so the regex never runs on huge input.
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _REPOSITORY.fullmatch(name):
        shown = name[:MAX_NAME_LENGTH] if isinstance(name, str) else repr(name)[:MAX_NAME_LENGTH]
        raise SwarmregError(
            NAME_INVALID,
            f"invalid repository name: must match {_REPOSITORY.pattern} "
            f"and be at most {MAX_NAME_LENGTH} characters",
            {"name": shown},
        )
    return name


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag (``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``), else TAG_INVALID."""
    if not isinstance(tag, str) or len(tag) > MAX_TAG_LENGTH or not _TAG.fullmatch(tag):
        shown = tag[:MAX_TAG_LENGTH + 1] if isinstance(tag, str) else repr(tag)[:MAX_TAG_LENGTH]
        raise SwarmregError(TAG_INVALID, f"invalid tag: must match {_TAG.pattern}", {"tag": shown})
    return tag


def parse_reference(reference: str) -> Digest | str:
    """A manifest reference: a Digest if it contains ``:`` (DIGEST_INVALID unless sha256 or sha512), else a tag.

    Tags cannot contain ``:``, so the colon alone decides which grammar applies.
    """
    if isinstance(reference, str) and ":" in reference:
        return Digest.parse(reference)
    return validate_tag(reference)
