"""Careless and hostile preheat requests (issue 12, point 5): refused in the OCI error envelope,
nothing started, the proxy serving on; who may preheat what; jobs bounded in number."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import load_config
from swarmreg.registry.auth import hash_password
from tests.conftest import PORT_ZERO, start_daemon
from tests.origin.helpers import assert_error
from tests.preheat.helpers import HERD, follow, post_job, preheat, push_test_image, start_herd
from tests.proxy.helpers import push_image

REPO = "team/app"


def no_leak(text: str) -> None:
    """An answer names no file and carries no traceback."""
    assert "Traceback" not in text and "/tmp" not in text and ".py" not in text, text


async def test_careless_requests_get_the_envelope_and_the_proxy_serves_on(nursery: trio.Nursery, tmp_path: Path):
    herd = await start_herd(nursery, tmp_path / "herd")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, REPO, "v1", [b"layer one"])
        bad_bodies: list[tuple[bytes, int, str]] = [
            (b"not json", 400, "BAD_REQUEST"),
            (b"\xff\xfe", 400, "BAD_REQUEST"),
            (b'["team/app:v1"]', 400, "BAD_REQUEST"),
            (b"{}", 400, "BAD_REQUEST"),
            (b'{"images": []}', 400, "BAD_REQUEST"),
            (b'{"images": "team/app:v1"}', 400, "BAD_REQUEST"),
            (b'{"images": [42]}', 400, "BAD_REQUEST"),
            (b'{"images": ["team/app:v1"], "extra": 1}', 400, "BAD_REQUEST"),
            (b"[" * 100_000, 400, "BAD_REQUEST"),
            (json.dumps({"images": [f"team/app:{i}" for i in range(1001)]}).encode(), 413, "TOO_LARGE"),
            (json.dumps({"images": ["team/app:v1"], "pad": "x" * (2 << 20)}).encode(), 413, "TOO_LARGE"),
        ]
        for reference in ["Team/App:v1", "team/app:bad tag", "a b", "x" * 600, "team/app@sha256:short",
                          "team//app", "/team/app", " team/app", "127.0.0.1:5000/", "team/app:"]:
            bad_bodies.append((json.dumps({"images": [reference]}).encode(), 400, "BAD_REQUEST"))
        for field in [{"platform": "linux"}, {"platform": "Linux/AMD64"}, {"platform": 7}, {"agents": 0},
                      {"agents": -1}, {"agents": True}, {"agents": "some"}, {"agents": 10**9}]:
            bad_bodies.append((json.dumps({"images": ["team/app:v1"], **field}).encode(), 400, "BAD_REQUEST"))
        for body, status, code in bad_bodies:
            response = await proxy.post("/preheat", content=body, headers={"Content-Type": "application/json"})
            assert_error(response, status, code)
            no_leak(response.text)

        async def chunked():  # no Content-Length: the limit holds as the body arrives
            for _ in range(40):
                yield b" " * (64 << 10)

        assert_error(await proxy.post("/preheat", content=chunked()), 413, "TOO_LARGE")
        for job_id, code in [("0" * 32, "JOB_UNKNOWN"), ("nope", "JOB_UNKNOWN"), ("x" * 5000, "JOB_UNKNOWN"),
                             ("..%2F..%2Fetc", "NOT_FOUND")]:
            assert_error(await proxy.get(f"/preheat/{job_id}"), 404, code)
        # An image that is nowhere: the job runs and fails, saying which and why.
        doc = await preheat(proxy, ["team/nothing:v1", image.reference])
        assert doc["status"] == "failed" and doc["images"] == {"total": 2, "done": 1, "failed": 1}
        assert doc["results"][0]["status"] == "failed" and "team/nothing:v1 not found" in doc["results"][0]["error"]
        assert doc["errors"] == [{"image": "team/nothing:v1", "message": doc["results"][0]["error"]}]
        no_leak(json.dumps(doc))
        # Agents asked for, none known: the origin still seeds, the job says what is missing.
        doc = await preheat(proxy, [image.reference], agents=2)
        assert doc["status"] == "failed" and doc["blobs"]["done"] == len(image.blobs)
        assert doc["agents"]["asked"] == 0 and "2 agent(s) asked for, the tracker knows 0" in json.dumps(doc["errors"])
        # The same reference twice is one image.
        assert (await preheat(proxy, [image.reference, image.reference]))["images"]["total"] == 1
        # Still serving, and preheating.
        assert (await proxy.get("/v2/")).status_code == 200
        assert (await preheat(proxy, [image.reference]))["status"] == "done"


USERS = {"admin": "admin-pw", "carol": "carol-pw"}
RULES = [("admin", ".*", ["pull", "push", "delete"]), ("carol", "secret/.*", []), ("*", ".*", ["pull"]),
         ("anonymous", "public/.*", ["pull"])]


async def start_guarded(nursery: trio.Nursery, tmp_path: Path, auth: str) -> str:
    users = "\n".join(f'{name} = "{hash_password(pw)}"' for name, pw in USERS.items())
    rules = "\n\n".join(f'[[proxy.access]]\nuser = "{user}"\nrepositories = "{pattern}"\nactions = {actions!r}'
                        .replace("'", '"') for user, pattern, actions in RULES)
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(f'[proxy]\nauth = "{auth}"\n\n[proxy.users]\n{users}\n\n{rules}\n')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, HERD)
    # Images go in through the registry API with admin's basic credentials (token mode: a token).
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30) as admin:
        if auth == "basic":
            admin.auth = ("admin", USERS["admin"])
        else:
            scope = " ".join(f"repository:{r}:pull,push" for r in ("a/one", "public/app", "secret/keys"))
            answer = await admin.get("/token", params={"service": "swarmreg", "scope": scope},
                                     auth=("admin", USERS["admin"]))
            admin.headers["Authorization"] = "Bearer " + answer.json()["token"]
        for repository in ("a/one", "public/app", "secret/keys"):
            await push_image(admin, repository, "1", [repository.encode()])
    return herd.url("proxy")


@pytest.mark.parametrize("auth", ["basic", "token"])
async def test_a_preheat_needs_pull_on_every_repository_it_names(nursery: trio.Nursery, tmp_path: Path, auth: str):
    url = await start_guarded(nursery, tmp_path, auth)
    carol, admin = ("carol", USERS["carol"]), ("admin", USERS["admin"])
    async with httpx.AsyncClient(base_url=url, timeout=60) as proxy:
        # No credentials: signing in is asked for, unless anonymous may pull everything named.
        response = await post_job(proxy, ["a/one:1"])
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["WWW-Authenticate"].startswith("Basic" if auth == "basic" else "Bearer")
        assert_error(await proxy.post("/preheat", json={"images": ["a/one:1"]}, auth=("carol", "wrong")),
                     401, "UNAUTHORIZED")
        # carol may pull a/one, not secret/keys: a job naming both starts nothing.
        denied = await proxy.post("/preheat", json={"images": ["a/one:1", "secret/keys:1"]}, auth=carol)
        assert_error(denied, 403, "DENIED")
        assert denied.json()["errors"][0]["detail"]["scopes"] == ["repository:secret/keys:pull"]
        started = await proxy.post("/preheat", json={"images": ["a/one:1"]}, auth=carol)
        assert started.status_code == 202, started.text
        job = started.json()["id"]
        proxy.auth = carol
        assert (await follow(proxy, job))["status"] == "done"
        proxy.auth = None
        # Its progress is for those who may pull what it names.
        assert_error(await proxy.get(f"/preheat/{job}"), 401, "UNAUTHORIZED")
        assert_error(await proxy.get(f"/preheat/{'0' * 32}"), 401, "UNAUTHORIZED")
        assert_error(await proxy.get(f"/preheat/{'0' * 32}", auth=carol), 404, "JOB_UNKNOWN")
        secret = await proxy.post("/preheat", json={"images": ["secret/keys:1"]}, auth=admin)
        assert secret.status_code == 202
        assert_error(await proxy.get(f"/preheat/{secret.json()['id']}", auth=carol), 403, "DENIED")
        if auth == "basic":  # anonymous may pull public/: no sign-in needed
            public = await post_job(proxy, ["public/app:1"])
            assert public.status_code == 202, public.text
            assert (await follow(proxy, public.json()["id"]))["status"] == "done"
        else:  # a bearer token counts with its scopes
            answer = await proxy.get("/token", params={"service": "swarmreg", "scope": "repository:a/one:pull"},
                                     auth=carol)
            bearer = {"Authorization": "Bearer " + answer.json()["token"]}
            ok = await proxy.post("/preheat", json={"images": ["a/one:1"]}, headers=bearer)
            assert ok.status_code == 202, ok.text
            response = await proxy.post("/preheat", json={"images": ["public/app:1"]}, headers=bearer)
            assert_error(response, 401, "UNAUTHORIZED")
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def _hold(stream: trio.SocketStream) -> None:
    """An upstream that accepts and never answers."""
    async with stream:
        await trio.sleep_forever()


async def test_jobs_beyond_the_limit_get_429_and_finished_ones_are_kept(nursery: trio.Nursery, tmp_path: Path):
    listeners = await nursery.start(partial(trio.serve_tcp, _hold, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    herd = await start_herd(nursery, tmp_path / "herd", "proxy.preheat_jobs=1", f'registries=[{{name = '
                            f'"127.0.0.1:{port}", scheme = "http", connect_timeout = 2, read_timeout = 4}}]')
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, REPO, "v1", [b"layer"])
        hanging = await post_job(proxy, [f"127.0.0.1:{port}/team/app:v1"])
        assert hanging.status_code == 202
        refused = await post_job(proxy, [image.reference])
        assert_error(refused, 429, "TOOMANYREQUESTS")
        assert refused.headers["Retry-After"]
        assert (await proxy.get(f"/preheat/{hanging.json()['id']}")).json()["status"] == "running"
        doc = await follow(proxy, hanging.json()["id"], timeout=30)  # the upstream's read timeout ends it
        assert doc["status"] == "failed" and f"127.0.0.1:{port}" in doc["results"][0]["error"], doc
        done = await preheat(proxy, [image.reference])  # a slot again
        assert done["status"] == "done"
        assert (await proxy.get(f"/preheat/{done['id']}")).json() == done  # kept after it ended
