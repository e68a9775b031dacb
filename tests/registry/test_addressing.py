"""How a request's repository is read (issue 12, point 3): ``?ns=``, the in-path upstream form,
bare names and default_registry, the precedence rule, read-only upstream namespaces. The
daemons' side is in test_addressing_daemons.py and test_addressing_access.py."""

from __future__ import annotations

import pytest

from swarmreg.errors import BLOB_UNKNOWN, DENIED, MANIFEST_UNKNOWN, NAME_INVALID, NAME_UNKNOWN, SwarmregError
from swarmreg.registry.addressing import Addressed, address, canonical_repository, serve, single_ns, writable

HUB = "docker.io/library/nginx"


@pytest.mark.parametrize(("name", "ns", "repository"), [
    ("nginx", "docker.io", HUB),
    ("library/nginx", "docker.io", HUB),
    ("nginx", "registry-1.docker.io", HUB),
    ("nginx", "index.docker.io", HUB),
    ("nginx", "Docker.IO", HUB),  # host names are case-insensitive
    ("team/app", "127.0.0.1:5000", "127.0.0.1:5000/team/app"),
    ("team/app", "localhost", "localhost/team/app"),
    ("app", "registry.example.com:443", "registry.example.com:443/app"),
    # With ns the path is the upstream's own name, whatever its first component.
    ("docker.io/library/nginx", "ghcr.io", "ghcr.io/docker.io/library/nginx"),
])
def test_ns_names_the_upstream(name: str, ns: str, repository: str) -> None:
    addressed = address(name, ns, default_registry="docker.io")
    assert addressed == Addressed(name, ns, repository, None)  # never a fallback with ns
    assert addressed.query == {"ns": ns}


@pytest.mark.parametrize(("name", "repository"), [
    ("docker.io/nginx", HUB),
    ("registry-1.docker.io/nginx", HUB),
    ("index.docker.io/library/nginx", HUB),
    (HUB, HUB),
    ("docker.io/bitnami/redis", "docker.io/bitnami/redis"),
    ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app"),
    ("localhost/app", "localhost/app"),
    ("team/app", "team/app"),  # no host first: swarmreg's own
    ("myhost/app", "myhost/app"),  # neither dot, colon nor localhost: not a host
    ("docker.io", "docker.io"),  # a single component is a repository, never a registry
])
def test_in_path_names_are_canonical(name: str, repository: str) -> None:
    assert address(name).repository == canonical_repository(name) == repository
    assert address(name).query == {}


def test_a_bare_name_falls_back_to_the_default_registry_only() -> None:
    assert address("alpine", None, "docker.io").fallback == "docker.io/library/alpine"
    assert address("team/app", None, "registry.example.com:5000").fallback == "registry.example.com:5000/team/app"
    assert address("alpine").fallback is None  # no default_registry: bare names stay local
    assert address("docker.io/alpine", None, "ghcr.io").fallback is None  # already an upstream's


@pytest.mark.parametrize("ns", [
    "", "team", "a b.com", "a..b", "-x.com", "x-.com", "host.com:99999", "host.com:0", "host.com:",
    "[::1]:5000", "::1", "https://docker.io", "docker.io/library", "host.com:5000:1", "x" * 300 + ".com",
    "docker.io?x", "dock%65r.io", "\u00e9.com",
    "x." + "a" * 64 + ".com",  # a DNS label is at most 63 characters (was a 500 from the resolver)
])
def test_a_malformed_ns_is_name_invalid(ns: str) -> None:
    with pytest.raises(SwarmregError) as raised:
        address("nginx", ns)
    assert raised.value.code is NAME_INVALID


def test_the_repository_must_be_valid_in_every_form() -> None:
    for name, ns in [("Nginx", "docker.io"), ("a//b", None), ("docker.io/Nginx", None),
                     ("team/app", "x" * 250 + ".com"),  # the joined name is over 255 characters
                     ("127.0.0.1:5000/app", "docker.io")]:  # a port is only for the first component
        with pytest.raises(SwarmregError) as raised:
            address(name, ns)
        assert raised.value.code is NAME_INVALID, (name, ns)


@pytest.mark.parametrize("name", [
    "127.0.0.1:99999/x", "127.0.0.1:0/x", "localhost:65536/x", "a" * 64 + ".com/x", "x." + "a" * 64 + ".com/y/z",
])
def test_an_in_path_registry_must_be_host_and_port(name: str) -> None:
    # The in-path form is checked as ?ns= is: these reached the index as upstream names and
    # were an INTERNAL 500 there (a RegistryConfig refusing the port, the resolver the label).
    with pytest.raises(SwarmregError) as raised:
        address(name)
    assert raised.value.code is NAME_INVALID
    assert address("127.0.0.1:65535/x").repository == "127.0.0.1:65535/x"
    assert address("a" * 63 + ".com/x").repository == "a" * 63 + ".com/x"


def test_repeated_ns_parameters() -> None:
    assert single_ns([]) is None
    assert single_ns(["docker.io", "docker.io"]) == "docker.io"
    with pytest.raises(SwarmregError) as raised:
        single_ns(["docker.io", "ghcr.io"])
    assert raised.value.code is NAME_INVALID


async def test_the_precedence_rule() -> None:
    """Swarmreg's own repository first; the default upstream only for a name swarmreg lacks."""
    local = {"team/app": {"v1": "local v1"}}
    upstream = {"docker.io/library/alpine": {"3": "alpine 3"}, "docker.io/team/app": {"v2": "hub's v2"}}
    asked: list[str] = []
    authorized: list[str] = []

    async def has_repository(repository: str) -> bool:
        return repository in local

    async def authorize(repository: str) -> None:
        authorized.append(repository)

    def tag(ref: str):  # type: ignore[no-untyped-def]
        async def attempt(repository: str) -> str:
            asked.append(repository)
            found = {**local, **upstream}.get(repository, {}).get(ref)
            if found is None:
                raise SwarmregError(MANIFEST_UNKNOWN)
            return found
        return attempt

    async def answer(name: str, ref: str) -> str:
        return await serve(address(name, None, "docker.io"), tag(ref), has_repository=has_repository,
                           authorize=authorize)

    assert await answer("team/app", "v1") == "local v1"
    assert asked == ["team/app"] and authorized == []
    assert await answer("alpine", "3") == "alpine 3"
    assert authorized == ["docker.io/library/alpine"]
    # team/app is swarmreg's: a tag it lacks is not looked for at Docker Hub's team/app.
    with pytest.raises(SwarmregError) as raised:
        await answer("team/app", "v2")
    assert raised.value.code is MANIFEST_UNKNOWN and "docker.io/team/app" not in asked[2:]

    # Only "not here" errors fall back; an empty answer does when the caller says it is nothing.
    async def failing(repository: str) -> str:
        raise SwarmregError(NAME_INVALID)

    with pytest.raises(SwarmregError) as raised:
        await serve(address("alpine", None, "docker.io"), failing, has_repository=has_repository)
    assert raised.value.code is NAME_INVALID

    async def listing(repository: str) -> list[str]:
        return ["found"] if repository.startswith("docker.io/") else []

    assert await serve(address("alpine", None, "docker.io"), listing, has_repository=has_repository,
                       empty=lambda found: not found) == ["found"]
    assert await serve(address("team/app", None, "docker.io"), listing, has_repository=has_repository,
                       empty=lambda found: not found) == []
    # NAME_UNKNOWN already says the repository is not here; BLOB_UNKNOWN asks.
    for code in (NAME_UNKNOWN, BLOB_UNKNOWN):
        async def missing(repository: str, code: object = code) -> str:
            if repository == "alpine":
                raise SwarmregError(code)  # type: ignore[arg-type]
            return repository

        assert await serve(address("alpine", None, "docker.io"), missing,
                           has_repository=has_repository) == "docker.io/library/alpine"


@pytest.mark.parametrize("repository", ["docker.io/library/nginx", "127.0.0.1:5000/team/app", "localhost/x"])
def test_upstream_namespaces_are_read_only(repository: str) -> None:
    with pytest.raises(SwarmregError) as raised:
        writable(repository)
    error = raised.value
    registry = repository.partition("/")[0]
    assert error.code is DENIED and error.code.status == 403
    assert registry in error.message and f"push to {registry}" in error.message
    assert error.detail == {"name": repository, "upstream": registry}
    assert writable("team/app") == "team/app"
    assert writable("myhost/app") == "myhost/app"
