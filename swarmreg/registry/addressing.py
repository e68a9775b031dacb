"""Which repository a registry request means, as clients send it (issue 12, point 3).

Three forms reach the registry ports (the proxy's and every agent's):

- containerd's mirror form: ``/v2/library/nginx/manifests/1.27?ns=docker.io``. ``ns`` names the
  upstream registry; the path's name is the repository as that registry names it.
- the in-path form: ``/v2/docker.io/nginx/manifests/1.27``, when the first component names a
  registry host (it has a dot or a colon, or is ``localhost``), as ociregistry and Dragonfly take it.
- a bare name (``/v2/team/app/...``): swarmreg's own repository, or, when swarmreg has no such
  repository and ``default_registry`` is set, that upstream's.

Inside swarmreg an upstream's image lives under ``<registry>/<repository>`` with Docker Hub's
canonical names (``docker.io/library/nginx``), so each form ends at one repository name: access
rules, token grants and the index all see that name. Upstream namespaces are read-only.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

from swarmreg.errors import BLOB_UNKNOWN, DENIED, MANIFEST_UNKNOWN, NAME_INVALID, NAME_UNKNOWN, SwarmregError
from swarmreg.oci.names import validate_repository
from swarmreg.upstream.names import cached_repository, is_registry_host, split_upstream

T = TypeVar("T")

# host[:port]: DNS labels of at most 63 characters (or an IPv4 address) and a port up to 65535.
# An IPv6 literal cannot be part of a repository name, so it is not accepted here either.
_NS = re.compile(
    r"(?=[^:]{1,253}(?::|$))[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"(?::(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}))?")
# What "swarmreg does not have it here" looks like: only these send a bare name on to the
# default upstream.
MISSING = frozenset({MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN})


@attrs.frozen
class Addressed:
    """One request's repository: as the client named it, and where swarmreg keeps it."""

    name: str  # the repository as the path names it
    ns: str | None  # containerd's ?ns=, as sent (None without it)
    repository: str  # where swarmreg keeps it: the name access rules, tokens and the index see
    fallback: str | None = None  # a bare name's repository at default_registry, when that is set

    @property
    def query(self) -> dict[str, str]:
        """The query parameters that keep this addressing in a link (the next page's)."""
        return {"ns": self.ns} if self.ns is not None else {}


def _invalid_ns(ns: str) -> SwarmregError:
    return SwarmregError(NAME_INVALID, "invalid ns parameter: it must name a registry as host[:port] "
                         "(e.g. docker.io or registry.example.com:5000)", {"ns": ns[:255]})


def validate_ns(ns: str) -> str:
    """``ns`` lowercased if it names a registry (``host[:port]`` with a dot, a port, or
    ``localhost``), else NAME_INVALID."""
    if len(ns) > 261 or not _NS.fullmatch(ns) or not is_registry_host(ns.lower()):
        raise _invalid_ns(ns)
    return ns.lower()


def canonical_repository(name: str) -> str:
    """A repository name as swarmreg keeps it: ``name`` itself, or, when its first component
    names a registry host, that upstream's cached repository with Docker Hub's canonical names
    (``registry-1.docker.io/nginx`` -> ``docker.io/library/nginx``). NAME_INVALID if malformed."""
    validate_repository(name)
    first, slash, rest = name.partition("/")
    if slash and is_registry_host(first):
        if not _NS.fullmatch(first):  # a port over 65535, a DNS label over 63 characters
            raise SwarmregError(NAME_INVALID, f"invalid repository name: {first} does not name a registry as "
                                "host[:port]", {"name": name[:255]})
        return validate_repository(cached_repository(first, rest))
    return name


def address(name: str, ns: str | None = None, default_registry: str = "") -> Addressed:
    """Where a request for repository ``name`` (its path) with ``?ns=`` ``ns`` is served.

    With ``ns`` the name is the upstream's own (``ns=docker.io`` and ``nginx`` is
    ``docker.io/library/nginx``), whatever its first component; without it, see
    canonical_repository. A bare name (no registry host first) also gets a ``fallback`` at
    ``default_registry`` when that is set; ``serve`` decides when it is used.
    """
    validate_repository(name)
    if ns is not None:
        registry = validate_ns(ns)
        return Addressed(name, ns, validate_repository(cached_repository(registry, name)))
    repository = canonical_repository(name)
    fallback = None
    if default_registry and split_upstream(repository) is None:
        fallback = validate_repository(cached_repository(default_registry, name))
    return Addressed(name, None, repository, fallback)


def single_ns(values: list[str]) -> str | None:
    """The request's ``ns`` from all its ``ns`` parameters: none, or one value (repeated at most);
    two different ones are NAME_INVALID."""
    if not values:
        return None
    if len(set(values)) > 1:
        raise SwarmregError(NAME_INVALID, "more than one ns parameter", {"ns": sorted(set(values))[:4]})
    return values[0]


async def serve(addressed: Addressed, attempt: Callable[[str], Awaitable[T]], *,
                has_repository: Callable[[str], Awaitable[bool]],
                authorize: Callable[[str], Awaitable[None]] | None = None,
                empty: Callable[[T], bool] = lambda _: False) -> T:
    """The precedence rule for bare names, the same on every read endpoint of both ports.

    ``attempt(repository)`` answers the request from one repository (raising a MISSING error,
    or returning something ``empty`` says is nothing, when that repository lacks it). A bare
    name is swarmreg's own repository first. Only when swarmreg has no repository of that name
    at all (not merely lacking this tag, manifest or blob) and ``default_registry`` is set, the
    request is answered from the default upstream's repository, after ``authorize`` allows
    pulling that one. So a pushed ``team/app`` is never mixed with an upstream's ``team/app``:
    a tag missing here stays missing, and cannot be served by whoever owns that name upstream.
    """
    try:
        result = await attempt(addressed.repository)
    except SwarmregError as error:
        if addressed.fallback is None or error.code not in MISSING:
            raise
        if error.code is not NAME_UNKNOWN and await has_repository(addressed.repository):
            raise
    else:
        if addressed.fallback is None or not empty(result) or await has_repository(addressed.repository):
            return result
    fallback = addressed.fallback
    assert fallback is not None  # every other way out returned or raised above
    if authorize is not None:
        await authorize(fallback)
    return await attempt(fallback)


def writable(repository: str) -> str:
    """``repository`` if pushes may go into it; DENIED for an upstream's namespace (the cache of
    a registry is read-only: what is pushed belongs at that registry). Deletes stay allowed."""
    upstream = split_upstream(repository)
    if upstream is not None:
        registry = upstream[0]
        raise SwarmregError(
            DENIED, f"{repository} is swarmreg's read-only cache of the upstream registry {registry}: "
                    f"push to {registry} itself, and pull it through swarmreg",
            {"name": repository, "upstream": registry})
    return repository
