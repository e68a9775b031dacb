"""Tests and helpers that drive real registry clients (skopeo, docker, podman, containerd)."""
