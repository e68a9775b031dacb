"""What the TLS tests share: a dev CA with node certificates, and client contexts from it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from swarmreg.devcluster import make_dev_certs

# Each node's certificate carries the roles its daemon runs; the stranger's none.
NODES = {"herd": ("origin", "tracker", "index", "proxy"), "agent": ("agent",), "stranger": ()}


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A dev CA and node (and peer-wire) certificates for NODES, made by `swarmreg certs`' code."""
    directory = tmp_path / "certs"
    make_dev_certs(directory, NODES)
    return directory


def client_context(certs: Path, name: str | None) -> ssl.SSLContext:
    """A client context trusting the cluster CA, presenting ``name``'s certificate (or none)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if name is not None:
        context.load_cert_chain(certs / f"{name}.pem", certs / f"{name}.key")
    return context
