"""Tests of the packaging: the Containerfile built and run with podman, the systemd units, the
Kubernetes manifests and the Helm chart (deploy/, docs/install.md)."""
