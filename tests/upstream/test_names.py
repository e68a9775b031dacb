"""Docker's reading of image references: Docker Hub's names and library/ (no network needed)."""

from __future__ import annotations

import pytest

from swarmreg.upstream.names import is_registry_host, parse_reference, registry_endpoint, upstream_repository


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
