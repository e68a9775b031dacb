"""Docker's token flow on the proxy, and access rules per user and repository."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import AccessRuleConfig
from swarmreg.registry.access import Access, Authorizer
from swarmreg.registry.auth import BasicAuth, hash_password
from swarmreg.registry.tokens import Grant, TokenIssuer, parse_scope
from tests.conftest import start_daemon
from tests.proxy.helpers import digest_of, push_blob, push_image

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
RULES = [  # alice: everything under team/; bob: pulls team/; anyone: pulls public/
    '[[proxy.access]]\nuser = "alice"\nrepositories = "(team|public)/.*"\nactions = ["pull", "push", "delete"]',
    '[[proxy.access]]\nuser = "bob"\nrepositories = "team/.*"\nactions = ["pull"]',
    '[[proxy.access]]\nuser = "anonymous"\nrepositories = "public/.*"\nactions = ["pull"]',
]


async def start_proxy(nursery: trio.Nursery, tmp_path: Path, auth: str) -> str:
    config_file = tmp_path / "proxy.toml"
    users = "\n".join(f'{name} = "{hash_password(pw)}"' for name, pw in USERS.items())
    config_file.write_text(f'[proxy]\nauth = "{auth}"\n\n[proxy.users]\n{users}\n\n' + "\n\n".join(RULES) + "\n")
    from swarmreg.config import load_config
    from tests.conftest import PORT_ZERO

    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, ["origin", "tracker", "index", "proxy"])
    return herd.url("proxy")


@pytest.fixture
async def token_proxy(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[str]:
    yield await start_proxy(nursery, tmp_path, "token")


def challenge(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


async def token_for(realm: str, scope: str, user: str | None) -> str:
    """A token from ``realm`` for ``scope``, signed in as ``user`` (None: anonymous)."""
    auth = (user, USERS[user]) if user else None
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(realm, params={"service": "swarmreg", "scope": scope}, auth=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    return body["token"]


async def test_the_token_dance_as_docker_does_it(token_proxy: str) -> None:
    async with httpx.AsyncClient(base_url=token_proxy, timeout=30) as client:
        ping = await client.get("/v2/")
        assert ping.status_code == 401 and ping.json()["errors"][0]["code"] == "UNAUTHORIZED"
        params = challenge(ping)
        assert params == {"realm": f"{token_proxy}/token", "service": "swarmreg"}
        denied = await client.put("/v2/team/app/manifests/1", content=b"{}")
        assert challenge(denied)["scope"] == "repository:team/app:push"
        token = await token_for(params["realm"], "repository:team/app:pull,push", "alice")
        client.headers["Authorization"] = f"Bearer {token}"
        assert (await client.get("/v2/")).status_code == 200
        digest, manifest = await push_image(client, "team/app", "1", [b"layer one"])
        assert (await client.get("/v2/team/app/manifests/1")).content == manifest
        # The token is for team/app only.
        other = await client.get("/v2/team/other/tags/list")
        assert other.status_code == 401
        assert challenge(other) | {} == {"realm": f"{token_proxy}/token", "service": "swarmreg",
                                         "scope": "repository:team/other:pull", "error": "insufficient_scope"}


async def test_tokens_grant_only_what_the_rules_allow(token_proxy: str) -> None:
    async with httpx.AsyncClient(base_url=token_proxy, timeout=30) as client:
        realm = f"{token_proxy}/token"
        alice = await token_for(realm, "repository:team/app:pull,push repository:public/app:push", "alice")
        client.headers["Authorization"] = f"Bearer {alice}"
        _, manifest = await push_image(client, "team/app", "1", [b"team layer"])
        await push_image(client, "public/app", "1", [b"public layer"])
        # bob asks for pull and push on team/app and gets pull only.
        bob = await token_for(realm, "repository:team/app:pull,push", "bob")
        client.headers["Authorization"] = f"Bearer {bob}"
        assert (await client.get("/v2/team/app/manifests/1")).content == manifest
        refused = await client.post("/v2/team/app/blobs/uploads/")
        assert refused.status_code == 401 and challenge(refused)["error"] == "insufficient_scope"
        for method in ("GET", "DELETE"):  # an upload session's status and cancel need push, not pull
            session = await client.request(method, "/v2/team/app/blobs/uploads/some-session")
            assert challenge(session)["scope"] == "repository:team/app:push", method
        # Nobody signed in: public/ pulls, nothing else.
        anonymous = await token_for(realm, "repository:public/app:pull,push repository:team/app:pull", None)
        client.headers["Authorization"] = f"Bearer {anonymous}"
        assert (await client.get("/v2/public/app/manifests/1")).status_code == 200
        assert (await client.get("/v2/team/app/manifests/1")).status_code == 401
        assert (await client.post("/v2/public/app/blobs/uploads/")).status_code == 401
        # Wrong credentials get no token at all.
        wrong = await client.get(realm, params={"scope": "repository:team/app:pull"}, auth=("alice", "nope"))
        assert wrong.status_code == 401 and wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"


async def test_forged_expired_and_foreign_tokens_are_refused(token_proxy: str) -> None:
    async with httpx.AsyncClient(base_url=token_proxy, timeout=30) as client:
        good = await token_for(f"{token_proxy}/token", "repository:team/app:pull", "alice")
        header, body, signature = good.split(".")
        grants = [Grant("repository", "team/app", ("pull",))]
        for token in (f"{header}.{body}.{signature[:-2]}AA", "not.a.token", f"{header}.{body}",
                      TokenIssuer(b"another key", "swarmreg", 300).issue("alice", grants)[0]):
            response = await client.get("/v2/team/app/tags/list", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, token
        response = await client.get("/v2/team/app/tags/list", headers={"Authorization": f"Bearer {good}"})
        assert response.status_code in (200, 404)  # signed in and allowed: the repository may be empty


def test_token_expiry_and_scopes() -> None:
    issuer = TokenIssuer(b"k", "swarmreg", 60)
    token, lifetime = issuer.issue("alice", [Grant("repository", "a/b", ("pull",))], now=1000)
    assert lifetime == 60
    assert issuer.verify(token, now=1059).allows(Grant("repository", "a/b", ("pull",)))
    assert not issuer.verify(token, now=1059).allows(Grant("repository", "a/b", ("push",)))
    assert issuer.verify(token, now=1060) is None, "expired"
    assert TokenIssuer(b"k", "other service", 60).verify(token, now=1000) is None
    assert parse_scope("repository:library/app:pull,push registry:catalog:* bogus repository:x:") == [
        Grant("repository", "library/app", ("pull", "push")), Grant("registry", "catalog", ("*",))]


def test_scopes_whose_repository_has_a_port() -> None:
    assert parse_scope("repository:127.0.0.1:5000/team/app:pull") == [
        Grant("repository", "127.0.0.1:5000/team/app", ("pull",))]
    assert parse_scope("repository:localhost:5000/a:pull,push repository(plugin):r.io:1/x:*") == [
        Grant("repository", "localhost:5000/a", ("pull", "push")), Grant("repository", "r.io:1/x", ("*",))]
    assert parse_scope("repository:team/app:pull registry:catalog:*") == [
        Grant("repository", "team/app", ("pull",)), Grant("registry", "catalog", ("*",))]
    # Malformed ones are still skipped.
    assert parse_scope("repository::pull repository:app repository:app:PULL :a:pull") == []


async def test_basic_auth_with_rules_answers_403_for_what_a_user_may_not_do(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    proxy = await start_proxy(nursery, tmp_path, "basic")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=("alice", USERS["alice"])) as alice:
        await push_image(alice, "team/app", "1", [b"shared layer"])
        await push_blob(alice, "public/src", b"mountable")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=("bob", USERS["bob"])) as bob:
        assert (await bob.get("/v2/team/app/manifests/1")).status_code == 200
        refused = await bob.put("/v2/team/app/manifests/2", content=b"{}")
        assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
        assert (await bob.delete("/v2/team/app/manifests/1")).status_code == 403
        # The catalog names what bob may pull: team/app, not public/src.
        assert (await bob.get("/v2/_catalog")).json() == {"repositories": ["team/app"]}
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=("alice", USERS["alice"])) as alice:
        # alice may pull public/src: a mount; she may not pull private/src (no rule): an upload instead.
        mounted = await alice.post("/v2/team/app/blobs/uploads/",
                                   params={"mount": digest_of(b"mountable"), "from": "public/src"})
        assert mounted.status_code == 201
        not_mounted = await alice.post("/v2/team/app/blobs/uploads/",
                                       params={"mount": digest_of(b"mountable"), "from": "private/src"})
        assert not_mounted.status_code == 202


async def test_repeated_scopes_are_one_grant_per_resource() -> None:
    """A token names each resource once, with every action granted on it: a client that repeats
    scopes (or asks for pull, then push) does not grow the token it sends on every request."""
    issuer = TokenIssuer(b"k", "swarmreg", 60)
    access = Access([AccessRuleConfig("anonymous", "public/.*", ("pull", "push"))])
    authorizer = Authorizer(BasicAuth({}), access, issuer)
    scopes = [*parse_scope("repository:public/a:pull " * 50), *parse_scope("repository:public/a:push,pull"),
              *parse_scope("registry:catalog:* registry:catalog:* repository:team/a:pull")]
    token, _ = await authorizer.token(None, scopes)
    claims = issuer.verify(token)
    assert claims is not None
    assert claims.grants == (Grant("repository", "public/a", ("pull", "push")), Grant("registry", "catalog", ("*",)))
