"""The upstream-registry backend's own rules: which namespaces are an upstream's, the routing
ahead of [[backends]], the air gap, its configuration (the shared suite covers the contract)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from swarmreg.backends.filesystem import FilesystemBackend
from swarmreg.backends.registry import UPSTREAM_NAMESPACE, RegistryBackend, RegistryOptions
from swarmreg.backends.router import BackendRouter
from swarmreg.config import ConfigError, RegistryConfig, load_config
from swarmreg.digest import Digest
from swarmreg.errors import UNSUPPORTED, UPSTREAM_UNAVAILABLE, SwarmregError
from swarmreg.upstream.names import split_upstream

NAMESPACES = [
    "127.0.0.1:5000/team/app", "localhost/app", "localhost:5000/a/b", "docker.io/library/nginx",
    "registry.example.com/x", "ghcr.io/owner/repo/sub", "a.b/", "host:1/x", "library/foo", "team/app",
    "localhostx/app", "xlocalhost/app", "app", "a.b", "host:5000", "LOCALHOST/app", "my_host/app",
    "a/b.c/d", "a/b:1/d", ".../x", ":/x", "", "/", "localhost", "localhost/", "docker.io/a\nb",
]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_upstream_namespace_matches_exactly_what_split_upstream_reads(namespace: str) -> None:
    assert bool(re.fullmatch(UPSTREAM_NAMESPACE, namespace)) == (split_upstream(namespace) is not None)


def test_locate_a_namespace() -> None:
    backend = RegistryBackend()
    assert backend.locate("127.0.0.1:5000/team/app") == ("127.0.0.1:5000", "team/app")
    assert backend.locate("docker.io/nginx") == ("docker.io", "library/nginx")
    assert backend.locate("index.docker.io/library/nginx") == ("docker.io", "library/nginx")
    assert backend.locate("team/app") is None
    fixed = RegistryBackend(registry="registry.internal:5000")
    assert fixed.locate("team/app") == ("registry.internal:5000", "team/app")
    assert RegistryBackend(registry="docker.io").locate("alpine") == ("docker.io", "library/alpine")


async def counting_listener(nursery: trio.Nursery) -> tuple[int, list[int]]:
    """A TCP port on 127.0.0.1 that counts the connections made to it (and answers nothing)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(1)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return listeners[0].socket.getsockname()[1], accepted


async def test_air_gapped_makes_no_request(nursery: trio.Nursery) -> None:
    port, accepted = await counting_listener(nursery)
    registries = [RegistryConfig(name=f"127.0.0.1:{port}", scheme="http", read_timeout=1)]
    namespace = f"127.0.0.1:{port}/team/app"
    digest = Digest.of(b"anything")
    gapped = RegistryBackend.for_upstreams(registries, air_gapped=True)
    assert await gapped.stat(namespace, digest) is None
    assert await gapped.download(namespace, digest) is None
    await gapped.aclose()
    assert accepted == []
    # Not air-gapped, the same calls do reach it (here: a server that hangs up at once).
    open_ = RegistryBackend.for_upstreams(registries, air_gapped=False)
    with pytest.raises(SwarmregError) as info:
        await open_.stat(namespace, digest)
    await open_.aclose()
    assert info.value.code is UPSTREAM_UNAVAILABLE and f"127.0.0.1:{port}" in info.value.message
    assert accepted


async def test_a_namespace_naming_no_registry_is_nothing_there() -> None:
    backend = RegistryBackend()
    assert await backend.stat("team/app", Digest.of(b"x")) is None
    assert await backend.download("team/app", Digest.of(b"x")) is None
    with pytest.raises(SwarmregError) as info:
        await backend.upload_file("127.0.0.1:5000/team/app", Digest.of(b"x"), Path("/nonexistent"))
    assert info.value.code is UNSUPPORTED and "upstream registry 127.0.0.1:5000" in info.value.message
    assert not RegistryBackend.writable and FilesystemBackend.writable


def test_upstream_namespaces_route_to_the_registry_backend_first(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('''
air_gapped = true

[[registries]]
name = "127.0.0.1:5000"
scheme = "http"

[[backends]]
namespace = ".*"
type = "filesystem"

[[backends]]
namespace = "mirror/.*"
type = "registry"
options = { registry = "registry.internal:5000", registries = [{ name = "registry.internal:5000", scheme = "http" }] }
''')
    config = load_config(config_file, data_dir=str(tmp_path / "data"))
    router = BackendRouter.from_config(config.backends, tmp_path, registries=config.registries,
                                       air_gapped=config.air_gapped)
    upstream = router.for_namespace("127.0.0.1:5000/team/app")
    assert isinstance(upstream, RegistryBackend) and upstream.air_gapped
    assert upstream.upstreams.config("127.0.0.1:5000").scheme == "http"
    assert router.for_namespace("docker.io/library/nginx") is upstream
    assert isinstance(router.for_namespace("team/app"), FilesystemBackend)
    # The configured routes keep their order: ".*" comes first, so mirror/ goes to the filesystem.
    assert isinstance(router.for_namespace("mirror/app"), FilesystemBackend)
    fixed = router.routes[2][1]
    assert isinstance(fixed, RegistryBackend) and fixed.locate("mirror/app") == ("registry.internal:5000",
                                                                                 "mirror/app")


def test_registry_options_are_checked(tmp_path: Path) -> None:
    assert RegistryOptions() == RegistryOptions(registries=(), registry="")
    for options, complaint in (('{ registry = "http://x" }', "backends[0].options.registry"),
                               ('{ registries = [{ name = "a.b", auth = { user = "u", password_file = "/p" } }] }',
                                "password_file"),
                               ('{ colour = "blue" }', "colour")):
        config_file = tmp_path / "config.toml"
        config_file.write_text(f'[[backends]]\ntype = "registry"\noptions = {options}\n')
        with pytest.raises(ConfigError, match=re.escape(complaint)):
            load_config(config_file)
