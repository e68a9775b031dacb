"""Access rules mean what they say (issue 11, point 8): the catalog names only what the user may
pull, and in basic mode the rules for anonymous apply to requests without credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import AccessRuleConfig, load_config
from swarmreg.registry.access import Access, Principal
from swarmreg.registry.auth import hash_password
from tests.conftest import PORT_ZERO, start_daemon
from tests.proxy.helpers import push_blob, push_image

USERS = {"admin": "admin-pw", "carol": "carol-pw"}
RULES = [
    # admin may do everything; carol is denied secret/ (no actions), then may pull everything else.
    ("admin", ".*", ["pull", "push", "delete"]),
    ("carol", "secret/.*", []),
    ("*", ".*", ["pull"]),
    # Without credentials: pull public/, nothing else.
    ("anonymous", "public/.*", ["pull"]),
]
REPOSITORIES = ["a/one", "a/two", "public/app", "secret/keys", "secret/more", "z/last"]


async def start_proxy(nursery: trio.Nursery, tmp_path: Path, auth: str) -> str:
    users = "\n".join(f'{name} = "{hash_password(pw)}"' for name, pw in USERS.items())
    rules = "\n\n".join(f'[[proxy.access]]\nuser = "{user}"\nrepositories = "{pattern}"\nactions = {actions!r}'
                        .replace("'", '"') for user, pattern, actions in RULES)
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(f'[proxy]\nauth = "{auth}"\n\n[proxy.users]\n{users}\n\n{rules}\n')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, ["origin", "tracker", "index", "proxy"])
    proxy = herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as admin:
        if auth == "basic":
            admin.auth = ("admin", USERS["admin"])
        else:
            admin.headers["Authorization"] = "Bearer " + await token(
                proxy, " ".join(f"repository:{repo}:pull,push" for repo in REPOSITORIES), "admin")
        for repository in REPOSITORIES:
            await push_image(admin, repository, "1", [repository.encode()])
    return proxy


async def token(proxy: str, scope: str, user: str | None) -> str:
    auth = (user, USERS[user]) if user else None
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{proxy}/token", params={"service": "swarmreg", "scope": scope}, auth=auth)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def all_pages(client: httpx.AsyncClient, n: int) -> list[list[str]]:
    """Every catalog page of ``n``, following the Link headers."""
    pages, url = [], f"/v2/_catalog?n={n}"
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json()["repositories"])
        url = response.headers.get("Link", "").partition(">")[0].removeprefix("<")
    return pages


def test_an_earlier_deny_wins_over_a_later_pull_everything_rule() -> None:
    access = Access([AccessRuleConfig(user, pattern, tuple(actions)) for user, pattern, actions in RULES])  # type: ignore[arg-type]
    carol, admin, anonymous = (Principal(user, access) for user in ("carol", "admin", None))
    assert not carol.sees_everything and admin.sees_everything and not anonymous.sees_everything
    assert [r for r in REPOSITORIES if carol.may_pull(r)] == ["a/one", "a/two", "public/app", "z/last"]
    assert [r for r in REPOSITORIES if anonymous.may_pull(r)] == ["public/app"]
    # No rules: every signed-in user sees all, anonymous nothing.
    assert Principal("x", Access([])).sees_everything and not Access([]).may_list(None)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["basic", "token"])
async def test_the_catalog_names_only_what_the_user_may_pull(nursery: trio.Nursery, tmp_path: Path,
                                                              mode: str) -> None:
    proxy = await start_proxy(nursery, tmp_path, mode)
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
        if mode == "basic":
            client.auth = ("carol", USERS["carol"])
        else:
            client.headers["Authorization"] = "Bearer " + await token(proxy, "registry:catalog:*", "carol")
        everything = await client.get("/v2/_catalog")
        assert everything.json() == {"repositories": ["a/one", "a/two", "public/app", "z/last"]}
        assert "Link" not in everything.headers
        # Pages count what carol sees: full pages, no gap and no repeat where secret/ was skipped.
        assert await all_pages(client, 2) == [["a/one", "a/two"], ["public/app", "z/last"]]
        assert await all_pages(client, 3) == [["a/one", "a/two", "public/app"], ["z/last"]]
        after = await client.get("/v2/_catalog", params={"n": 1, "last": "public/app"})
        assert after.json() == {"repositories": ["z/last"]} and "Link" not in after.headers
        assert (await client.get("/v2/_catalog", params={"n": 0})).json() == {"repositories": []}
        # carol may not pull what the catalog hides either.
        assert (await client.get("/v2/secret/keys/manifests/1")).status_code in (401, 403)
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as admin:
        if mode == "basic":
            admin.auth = ("admin", USERS["admin"])
        else:
            admin.headers["Authorization"] = "Bearer " + await token(proxy, "registry:catalog:*", "admin")
        assert (await admin.get("/v2/_catalog")).json() == {"repositories": REPOSITORIES}


@pytest.mark.timeout(120)
async def test_anonymous_rules_apply_in_basic_mode(nursery: trio.Nursery, tmp_path: Path) -> None:
    proxy = await start_proxy(nursery, tmp_path, "basic")
    challenge = 'Basic realm="swarmreg"'
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as anonymous:
        # The rule for anonymous: public/ pulls without credentials.
        pulled = await anonymous.get("/v2/public/app/manifests/1")
        assert pulled.status_code == 200, pulled.text
        assert (await anonymous.get("/v2/public/app/tags/list")).json() == {"name": "public/app", "tags": ["1"]}
        assert (await anonymous.get("/v2/_catalog")).json() == {"repositories": ["public/app"]}
        # Anything else gets the challenge, so a client with credentials signs in and retries.
        for method, path in [("POST", "/v2/public/app/blobs/uploads/"), ("PUT", "/v2/public/app/manifests/2"),
                             ("DELETE", "/v2/public/app/manifests/1"), ("GET", "/v2/a/one/manifests/1"),
                             ("GET", "/v2/")]:  # docker login learns how to sign in from /v2/
            refused = await anonymous.request(method, path)
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert refused.headers["WWW-Authenticate"] == challenge
    # With credentials the user's own rules apply, as before.
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=("admin", USERS["admin"])) as admin:
        assert (await admin.get("/v2/")).status_code == 200
        await push_blob(admin, "public/app", b"pushed by admin")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=("carol", "wrong")) as wrong:
        # Wrong credentials are not anonymous: 401, even where anonymous may pull.
        assert (await wrong.get("/v2/public/app/manifests/1")).status_code == 401
