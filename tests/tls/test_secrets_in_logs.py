"""Secrets never reach the logs: a full authenticated push (token flow) and pull on a TLS cluster,
at debug level."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from swarmreg.devcluster import tls_overrides
from swarmreg.registry.auth import hash_password
from tests.conftest import random_bytes
from tests.proxy.helpers import RegistryAuth, digest_of, push_image

USER, PASSWORD = "alice", "correct horse battery staple"
TOKEN_SECRET = "the-proxy-token-signing-key-0123456789"


def secrets(certs: Path, password_hash: str) -> dict[str, str]:
    """Every secret of the run, and the forms it could leak in."""
    found = {"password": PASSWORD, "password hash": password_hash, "token secret": TOKEN_SECRET,
             "basic credentials": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    for key in sorted(certs.glob("*.key")):
        body = "".join(line for line in key.read_text().splitlines() if "PRIVATE KEY" not in line)
        found[f"{key.name} (key material)"] = body[20:60]
    return found


async def test_an_authenticated_push_and_pull_leave_no_secret_in_the_logs(spawn: Any, tmp_path: Path,
                                                                         certs: Path) -> None:
    password_hash = hash_password(PASSWORD)
    debug = ('log.level="debug"', 'log.format="json"')
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], *debug, *tls_overrides(certs, "herd"),
                       f'proxy.users.{USER}="{password_hash}"', 'proxy.auth="token"',
                       f'proxy.token_secret="{TOKEN_SECRET}"')
    agent = await spawn("agent", ["agent"], *debug, *tls_overrides(certs, "agent"),
                        f"agent.tracker={herd.address('tracker', 'ws')}",
                        f"agent.index={herd.address('index', 'http')}")
    layers = [random_bytes(3 << 20, seed=4), b"small layer"]
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        assert (await proxy.get("/v2/")).status_code == 401
        wrong = await proxy.get("/token", params={"scope": "repository:private/app:pull"},
                                auth=(USER, PASSWORD + "!"))
        assert wrong.status_code == 401
        token = (await proxy.get("/token", params={"scope": "repository:private/app:pull,push"},
                                 auth=(USER, PASSWORD))).json()["token"]
        proxy.auth = RegistryAuth(USER, PASSWORD)
        _, manifest = await push_image(proxy, "private/app", "1", layers)
    async with httpx.AsyncClient(base_url=f"http://{agent.address('agent', 'registry')}", timeout=60) as registry:
        assert (await registry.get("/v2/private/app/manifests/1")).content == manifest
        for layer in layers:
            assert (await registry.get(f"/v2/private/app/blobs/{digest_of(layer)}")).content == layer
    await agent.stop()
    await herd.stop()
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("herd", "agent")}
    assert '"PUT /v2/private/app/manifests/1' in logs["herd"], "the logs saw the authenticated push"
    assert '"GET /v2/private/app/manifests/1' in logs["agent"], "and the pull"
    assert all('"level": "debug"' in text for text in logs.values()), "at debug level"
    for name, text in logs.items():
        for what, secret in {**secrets(certs, password_hash), "bearer token": token.rsplit(".", 1)[1]}.items():
            assert secret not in text, f"the {what} is in the {name} log"
        assert "authorization" not in text.lower(), f"an Authorization header value may be in the {name} log"
