"""Docker's reading of image references: Docker Hub's names and library/ (no network needed)."""

from __future__ import annotations

import pytest

from swarmreg.errors import SwarmregError
from swarmreg.names import validate_namespace
from swarmreg.oci.names import validate_repository
from swarmreg.upstream.names import (
    cached_repository,
    is_registry_host,
    parse_reference,
    registry_endpoint,
    split_upstream,
    upstream_repository,
)


@pytest.mark.parametrize(("text", "registry", "endpoint", "repository", "reference"), [
    ("alpine", "docker.io", "registry-1.docker.io", "library/alpine", "latest"),
    ("alpine:3.20", "docker.io", "registry-1.docker.io", "library/alpine", "3.20"),
    ("docker.io/alpine", "docker.io", "registry-1.docker.io", "library/alpine", "latest"),
    ("index.docker.io/library/alpine:edge", "docker.io", "registry-1.docker.io", "library/alpine", "edge"),
    ("bitnami/redis:7", "docker.io", "registry-1.docker.io", "bitnami/redis", "7"),
    ("quay.io/coreos/etcd:v3", "quay.io", "quay.io", "coreos/etcd", "v3"),
    ("localhost/app", "localhost", "localhost", "app", "latest"),
    ("localhost:5000/team/app:1", "localhost:5000", "localhost:5000", "team/app", "1"),
    ("127.0.0.1:5000/app@sha256:" + "a" * 64, "127.0.0.1:5000", "127.0.0.1:5000", "app", "sha256:" + "a" * 64),
    ("registry.example.com/single", "registry.example.com", "registry.example.com", "single", "latest"),
    ("myhost/app", "docker.io", "registry-1.docker.io", "myhost/app", "latest"),  # no dot, colon, localhost
])
def test_references_are_read_as_docker_reads_them(text, registry, endpoint, repository, reference):
    parsed = parse_reference(text)
    assert (parsed.registry, parsed.endpoint, parsed.repository, parsed.reference) == (
        registry, endpoint, repository, reference)


def test_docker_hub_names_reach_registry_1():
    assert registry_endpoint("docker.io") == "registry-1.docker.io"
    assert registry_endpoint("index.docker.io") == "registry-1.docker.io"
    assert registry_endpoint("quay.io") == "quay.io"
    assert upstream_repository("docker.io", "nginx") == "library/nginx"
    assert upstream_repository("index.docker.io", "nginx") == "library/nginx"
    assert upstream_repository("quay.io", "nginx") == "nginx"
    assert upstream_repository("docker.io", "user/nginx") == "user/nginx"


def test_host_detection():
    assert is_registry_host("localhost") and is_registry_host("a.b") and is_registry_host("host:5000")
    assert not is_registry_host("library") and not is_registry_host("my-org")


@pytest.mark.parametrize("text", ["", "UPPER/case", "app:bad tag", "app@sha256", "/app", "host.io/", "a//b"])
def test_malformed_references_are_refused(text):
    with pytest.raises(ValueError, match="invalid"):
        parse_reference(text)


def test_cached_repositories_carry_their_registry():
    assert cached_repository("docker.io", "nginx") == "docker.io/library/nginx"
    assert cached_repository("registry-1.docker.io", "library/nginx") == "docker.io/library/nginx"
    assert cached_repository("127.0.0.1:5000", "team/app") == "127.0.0.1:5000/team/app"
    assert split_upstream("127.0.0.1:5000/team/app") == ("127.0.0.1:5000", "team/app")
    assert split_upstream("docker.io/library/nginx") == ("docker.io", "library/nginx")
    assert split_upstream("localhost/a") == ("localhost", "a")
    # swarmreg's own repositories name no registry
    assert split_upstream("library/nginx") is None
    assert split_upstream("nginx") is None


@pytest.mark.parametrize("name", ["127.0.0.1:5000/team/app", "localhost:5000/a", "docker.io/library/nginx"])
def test_upstream_repositories_are_valid_names_and_namespaces(name):
    assert validate_repository(name) == name
    assert validate_namespace(name) == name


@pytest.mark.parametrize("name", ["a:5000", "127.0.0.1:5000", "a/b:5000/c", ":5000/a", "a:/b", "a:123456/b", "a:5000/"])
def test_a_port_only_ends_a_first_component_before_more(name):
    with pytest.raises(SwarmregError):
        validate_repository(name)
    with pytest.raises(SwarmregError):
        validate_namespace(name)
