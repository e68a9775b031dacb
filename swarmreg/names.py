"""Validation of the names that arrive in URLs: namespaces (Kraken) and repository names."""

from __future__ import annotations

import re

from swarmreg.errors import NAME_INVALID, SwarmregError

# Path components of letters, digits and . _ - that start with a letter or digit:
# no empty, "." or ".." component can reach a filesystem path or a URL.
# The first component may end in a port: an upstream registry's images live under
# ``<host[:port]>/<repo>`` (see swarmreg.upstream.names).
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5}(?=/))?(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
MAX_NAME_LENGTH = 255


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid Kraken namespace (e.g. ``library/foo``), else NAME_INVALID."""
    if len(namespace) > MAX_NAME_LENGTH or not _NAMESPACE.fullmatch(namespace):
        raise SwarmregError(NAME_INVALID, "invalid namespace", {"namespace": namespace[:MAX_NAME_LENGTH]})
    return namespace
