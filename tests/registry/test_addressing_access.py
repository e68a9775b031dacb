"""Access rules and tokens apply to the repository a request addresses (issue 12, point 3):
changing ``ns`` or the in-path form reaches nothing the rules do not allow, token scopes may
carry a registry's port, and a bare name's fallback to ``default_registry`` needs pull on the
upstream's repository as well. Pushes into an upstream are refused after authentication."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import load_config
from swarmreg.registry.auth import hash_password
from tests.conftest import PORT_ZERO, start_daemon
from tests.proxy.helpers import RegistryAuth, push_image

from .helpers import Seeded, herd_of, seed_image
from .test_addressing_daemons import assert_error

USERS = {"admin": "admin-pw", "hub": "hub-pw", "team": "team-pw", "bare": "bare-pw"}
RULES = [
    ("admin", ".*", ["pull", "push", "delete"]),
    ("hub", "docker.io/library/.*", ["pull"]),  # Docker Hub's official images, nothing else
    ("team", "team/.*", ["pull", "push"]),  # swarmreg's own team/ repositories
    ("bare", "alpine", ["pull"]),  # the bare name only, not Docker Hub's alpine
]
UPSTREAM = "127.0.0.1:5000"


async def start_proxy(nursery: trio.Nursery, tmp_path: Path, auth: str) -> tuple[str, dict[str, Seeded]]:
    users = "\n".join(f'{name} = "{hash_password(pw)}"' for name, pw in USERS.items())
    rules = "\n\n".join(f'[[proxy.access]]\nuser = "{user}"\nrepositories = "{pattern}"\nactions = {actions!r}'
                        .replace("'", '"') for user, pattern, actions in RULES)
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(f'default_registry = "docker.io"\nair_gapped = true\n\n[proxy]\nauth = "{auth}"\n\n'
                           f'[proxy.users]\n{users}\n\n{rules}\n')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, ["origin", "tracker", "index", "proxy"])
    addresses = herd_of(herd.ready["roles"])
    images = {repository: await seed_image(addresses, repository, ["1"], repository)
              for repository in ["docker.io/library/nginx", "docker.io/library/alpine", "docker.io/team/app",
                                 f"{UPSTREAM}/team/app"]}
    proxy = herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=RegistryAuth("admin", USERS["admin"])) as admin:
        await push_image(admin, "team/app", "1", [b"own"])
    return proxy, images


# (user, path, query, may): what each user may pull, by every form of addressing.
READS = [
    ("hub", "/v2/nginx", {"ns": "docker.io"}, True),
    ("hub", "/v2/library/nginx", {"ns": "registry-1.docker.io"}, True),
    ("hub", "/v2/docker.io/nginx", {}, True),
    ("hub", "/v2/team/app", {"ns": UPSTREAM}, False),  # another upstream by changing ns
    ("hub", "/v2/team/app", {"ns": "docker.io"}, False),  # Docker Hub, but not library/
    ("hub", "/v2/team/app", {}, False),
    ("hub", f"/v2/{UPSTREAM}/team/app", {}, False),
    ("team", "/v2/team/app", {}, True),
    ("team", "/v2/team/app", {"ns": "docker.io"}, False),  # the same path, another repository
    ("team", "/v2/team/app", {"ns": UPSTREAM}, False),
    ("team", "/v2/nginx", {"ns": "docker.io"}, False),
    ("admin", "/v2/team/app", {"ns": UPSTREAM}, True),
    ("admin", "/v2/alpine", {}, True),  # default_registry: Docker Hub's alpine
    ("bare", "/v2/alpine", {}, False),  # may pull "alpine", not docker.io/library/alpine
    ("hub", "/v2/alpine", {}, False),  # may pull docker.io/library/alpine, not "alpine"
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["basic", "token"])
async def test_rules_apply_to_the_addressed_repository(nursery: trio.Nursery, tmp_path: Path, mode: str) -> None:
    proxy, images = await start_proxy(nursery, tmp_path, mode)
    refused = 403 if mode == "basic" else 401  # a token without the grant: insufficient_scope
    for user, path, query, may in READS:
        # RegistryAuth: basic credentials, or the token for the scope the challenge names.
        async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=RegistryAuth(user, USERS[user])) as client:
            for endpoint in ("manifests/1", "tags/list"):
                response = await client.get(f"{path}/{endpoint}", params=query)
                if may:
                    assert response.status_code == 200, (user, path, query, response.text)
                else:
                    assert_error(response, refused, "DENIED" if mode == "basic" else "UNAUTHORIZED")
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as anonymous:
        # Nobody signed in: the challenge, as before; never the upstream's contents or its refusal.
        for method, path in [("GET", "/v2/nginx/manifests/1?ns=docker.io"),
                             ("POST", "/v2/docker.io/x/blobs/uploads/"), ("PUT", "/v2/nginx/manifests/1?ns=docker.io")]:
            response = await anonymous.request(method, path, content=b"{}")
            error = assert_error(response, 401, "UNAUTHORIZED")
            assert "docker.io" not in error["message"]
        if mode == "token":
            challenge = dict(re.findall(r'(\w+)="([^"]*)"', response.headers["WWW-Authenticate"]))
            assert challenge["scope"] == "repository:docker.io/library/nginx:push"  # the canonical name
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=RegistryAuth("admin", USERS["admin"])) as admin:
        # Signed in and allowed by the rules: the push is refused for being an upstream's.
        response = await admin.post(f"/v2/{UPSTREAM}/team/app/blobs/uploads/")
        error = assert_error(response, 403, "DENIED")
        assert f"push to {UPSTREAM}" in error["message"]


async def token(proxy: str, user: str, *scopes: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{proxy}/token", params={"service": "swarmreg", "scope": scopes},
                                    auth=(user, USERS[user]))
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def test_token_scopes_on_upstream_names(nursery: trio.Nursery, tmp_path: Path) -> None:
    proxy, images = await start_proxy(nursery, tmp_path, "token")
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
        # As containerd asks for a repository whose registry has a port.
        admin = await token(proxy, "admin", f"repository:{UPSTREAM}/team/app:pull")
        for path, query in [(f"/v2/{UPSTREAM}/team/app", {}), ("/v2/team/app", {"ns": UPSTREAM})]:
            got = await client.get(f"{path}/manifests/1", params=query, headers={"Authorization": f"Bearer {admin}"})
            assert got.content == images[f"{UPSTREAM}/team/app"].manifest
        # A scope in docker's in-path form is a grant on the canonical name.
        hub = await token(proxy, "hub", "repository:docker.io/nginx:pull")
        for path, query in [("/v2/docker.io/nginx", {}), ("/v2/nginx", {"ns": "docker.io"}),
                            ("/v2/docker.io/library/nginx", {})]:
            got = await client.get(f"{path}/manifests/1", params=query, headers={"Authorization": f"Bearer {hub}"})
            assert got.content == images["docker.io/library/nginx"].manifest, (path, query)
        # With ns the challenge asks for the repository the request addresses.
        other = await client.get("/v2/team/app/manifests/1", params={"ns": UPSTREAM},
                                 headers={"Authorization": f"Bearer {hub}"})
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', other.headers["WWW-Authenticate"]))
        assert challenge["scope"] == f"repository:{UPSTREAM}/team/app:pull"
        assert challenge["error"] == "insufficient_scope"
        # One scope for a bare name is enough for its fallback, when the rules allow both.
        admin = await token(proxy, "admin", "repository:alpine:pull")
        got = await client.get("/v2/alpine/manifests/1", headers={"Authorization": f"Bearer {admin}"})
        assert got.content == images["docker.io/library/alpine"].manifest
        bare = await token(proxy, "bare", "repository:alpine:pull")
        refused = await client.get("/v2/alpine/manifests/1", headers={"Authorization": f"Bearer {bare}"})
        assert refused.status_code == 401
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', refused.headers["WWW-Authenticate"]))
        assert challenge["scope"] == "repository:docker.io/library/alpine:pull"
