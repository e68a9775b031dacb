"""TLS on the registry ports (ociregistry's serverTlsConfig): one-way on the proxy, mutual on an
agent, with skopeo verifying the server and presenting its client certificate."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.devcluster import make_dev_certs
from tests.conftest import make_config, start_daemon

from .clients import Skopeo
from .layout import blob_digests, build_oci_layout, read_layout

MiB = 1 << 20


def cert_dir(certs: Path, where: Path, client: str | None = None) -> Path:
    """A containers-style certs.d directory: the CA, and a client certificate if ``client``."""
    where.mkdir(parents=True)
    shutil.copy(certs / "ca.pem", where / "ca.crt")
    if client is not None:
        shutil.copy(certs / f"{client}.pem", where / "client.cert")
        shutil.copy(certs / f"{client}.key", where / "client.key")
    return where


async def test_skopeo_over_https_to_the_proxy_and_mutual_tls_to_an_agent(
        nursery: trio.Nursery, tmp_path: Path, skopeo: Skopeo) -> None:
    certs = tmp_path / "certs"
    make_dev_certs(certs, ["proxy", "agent", "client"])
    herd = await start_daemon(nursery, make_config(
        tmp_path / "herd", f'proxy.tls.cert="{certs / "proxy.pem"}"', f'proxy.tls.key="{certs / "proxy.key"}"'),
        ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}",
        f'agent.registry_tls.cert="{certs / "agent.pem"}"', f'agent.registry_tls.key="{certs / "agent.key"}"',
        'agent.registry_tls.client_auth="verify"', f'agent.registry_tls.ca="{certs / "ca.pem"}"'), ["agent"])
    proxy, registry = roles["proxy"]["http"], agent.ready["roles"]["agent"]["registry"]
    trusting = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    async with httpx.AsyncClient(verify=trusting, timeout=30) as client:
        response = await client.get(f"https://{proxy}/v2/")
        assert response.status_code == 200 and response.headers["docker-distribution-api-version"] == "registry/2.0"
        with pytest.raises(httpx.TransportError):  # a client certificate is required on the agent
            await client.get(f"https://{registry}/v2/")
    async with httpx.AsyncClient(timeout=30) as client:
        with pytest.raises(httpx.HTTPError):  # plain HTTP on an HTTPS port gets nothing
            await client.get(f"http://{proxy}/v2/")

    image = await trio.to_thread.run_sync(build_oci_layout, tmp_path / "layout", [2 * MiB, 300])
    layout = f"oci:{tmp_path / 'layout'}:latest"
    # TLS verification on (skopeo's default): refused without the CA, accepted with it.
    refused = await skopeo("copy", layout, f"docker://{proxy}/edge/app:1", check=False)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower(), refused.stderr
    await skopeo("copy", "--dest-cert-dir", str(cert_dir(certs, tmp_path / "proxy.d")), layout,
                 f"docker://{proxy}/edge/app:1")
    # The agent wants a client certificate from the CA.
    out = tmp_path / "pulled"
    anonymous = await skopeo("copy", "--src-cert-dir", str(cert_dir(certs, tmp_path / "agent.d")),
                             f"docker://{registry}/edge/app:1", f"oci:{out}:latest", check=False)
    assert anonymous.returncode != 0, anonymous.stderr
    await skopeo("copy", "--src-cert-dir", str(cert_dir(certs, tmp_path / "client.d", client="client")),
                 f"docker://{registry}/edge/app:1", f"oci:{out}:latest")
    assert read_layout(out)["manifests"][0]["digest"] == image.manifest.digest
    assert blob_digests(out) == set(image.blobs)
