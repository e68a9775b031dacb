"""Image references as docker reads them: which upstream registry, which repository on it."""

from __future__ import annotations

import re

import attrs

DOCKER_HUB = "docker.io"
# docker.io is a name only: its registry API lives here.
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def is_registry_host(component: str) -> bool:
    """Whether a reference's first component names a registry, as docker decides: it has a
    dot or a colon (a port), or is ``localhost``."""
    return "." in component or ":" in component or component == "localhost"


def registry_endpoint(name: str) -> str:
    """The ``host[:port]`` to connect to for registry ``name``: Docker Hub's names go to
    ``registry-1.docker.io``."""
    return DOCKER_HUB_REGISTRY if name.lower() in _HUB_ALIASES else name


def canonical_registry(name: str) -> str:
    """``docker.io`` for any of Docker Hub's names, ``name`` otherwise."""
    return DOCKER_HUB if name.lower() in _HUB_ALIASES else name


def upstream_repository(registry: str, repository: str) -> str:
    """``repository`` as registry ``registry`` names it: on Docker Hub a single component
    (``alpine``) is an official image, ``library/alpine``."""
    if canonical_registry(registry) == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository


@attrs.frozen
class ImageReference:
    """A parsed ``[registry/]repository[:tag][@digest]``."""

    registry: str  # canonical: docker.io for Docker Hub
    repository: str  # as the registry names it (library/alpine)
    tag: str | None = None
    digest: str | None = None

    @property
    def endpoint(self) -> str:
        """The ``host[:port]`` the registry API is reached at."""
        return registry_endpoint(self.registry)

    @property
    def reference(self) -> str:
        """What to ask the manifest endpoint for: the digest if given, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """``text`` as docker reads an image reference: no registry means Docker Hub
    (``alpine`` is ``docker.io/library/alpine``); raises ValueError on a malformed one."""
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest in image reference {text!r}")
    name, tag = rest, None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:  # a colon after the last slash is the tag, not a port
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag in image reference {text!r}")
    first, slash, remainder = name.partition("/")
    if slash and is_registry_host(first):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, name
    if not repository or not all(_COMPONENT.fullmatch(part) for part in repository.split("/")):
        raise ValueError(f"invalid repository in image reference {text!r}")
    registry = canonical_registry(registry)
    return ImageReference(registry, upstream_repository(registry, repository), tag, digest or None)


def cached_repository(registry: str, repository: str) -> str:
    """Where swarmreg keeps ``repository`` of upstream ``registry``: ``<registry>/<repository>``,
    with Docker Hub's canonical names (``docker.io/library/alpine``)."""
    registry = canonical_registry(registry.lower())
    return f"{registry}/{upstream_repository(registry, repository)}"


def split_upstream(repository: str) -> tuple[str, str] | None:
    """A cached upstream repository -> (its registry, the repository as the registry names it);
    None for a repository of swarmreg's own (its first component names no registry host)."""
    first, slash, rest = repository.partition("/")
    if not slash or not is_registry_host(first):
        return None
    registry = canonical_registry(first)
    return registry, upstream_repository(registry, rest)
