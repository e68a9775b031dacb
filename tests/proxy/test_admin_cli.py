"""``swarmreg list``, ``swarmreg prune`` and ``swarmreg gc`` (issue 13 point 5), run as the
commands they are against a running herd: credentials from --user and SWARMREG_PASSWORD, from a
docker config file, through the token flow; clear one-line errors and exit statuses."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import blob_files, free_port, random_bytes
from tests.proxy.admin_helpers import USERS, start_herd, table
from tests.proxy.helpers import digest_of, push_image

ADMIN = ("admin", USERS["admin"])


async def swarmreg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process([sys.executable, "-m", "swarmreg", *args], capture_stdout=True,
                                  capture_stderr=True, check=False, env={**os.environ, **(env or {})})
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def one_line_error(done: subprocess.CompletedProcess[str], status: int) -> str:
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr.strip()


def docker_config(directory: Path, proxy: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    host = proxy.removeprefix("http://").replace("127.0.0.1", "localhost")  # as `docker login localhost:N`
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}, "other:5000": {}}}))
    return directory


async def test_list_and_prune_with_a_password_or_a_docker_config(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    proxy = herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=ADMIN) as client:
        app, _ = await push_image(client, "team/app", "v1", [random_bytes(1000, seed=1)])
        await push_image(client, "team/other", "v1", [random_bytes(1000, seed=2)])
    password = {"SWARMREG_PASSWORD": USERS["admin"]}

    listed = await swarmreg("list", "--proxy", proxy, "--user", "admin", env=password)
    assert listed.returncode == 0, listed.stderr
    assert [row[0] for row in table(listed.stdout) if row[0] != "-"] == ["URL", "team/app:v1", "team/other:v1"]
    pattern = await swarmreg("list", "--pattern", "app", "--json", "--proxy", proxy.removeprefix("http://"),
                             "--user", "admin", env=password)  # host:port, as docker names registries
    assert [i["digest"] for i in json.loads(pattern.stdout)["images"]] == [app]
    blobs = await swarmreg("list", "--blobs", "--proxy", proxy, "--user", "admin", env=password)
    assert table(blobs.stdout)[0] == ["DIGEST", "SIZE", "MANIFESTS", "REPOSITORIES"] and len(table(blobs.stdout)) == 5

    # A docker config file: named, in $DOCKER_CONFIG, or in ~/.docker.
    config_dir = docker_config(tmp_path / "docker", proxy, *ADMIN)
    home = tmp_path / "home"
    docker_config(home / ".docker", proxy, *ADMIN)
    for args, env in ((["--docker-config", str(config_dir)], {}),
                      (["--docker-config", str(config_dir / "config.json")], {}),
                      ([], {"DOCKER_CONFIG": str(config_dir)}), ([], {"HOME": str(home)})):
        done = await swarmreg("list", "--manifests", "--proxy", proxy, *args, env=env)
        assert done.returncode == 0 and "team/app@" in done.stdout, (args, done.stderr)

    dry = await swarmreg("prune", "--type", "pattern", "--expr", "^team/app:", "--dry-run", "--proxy", proxy,
                         "--docker-config", str(config_dir))
    assert dry.returncode == 0, dry.stderr
    assert [row[:3] for row in table(dry.stdout)[1:]] == [["would-prune", f"team/app@{app[:17]}", app]]
    real = await swarmreg("prune", "--type", "created", "--dur", "0", "--count", "1", "--proxy", proxy,
                          "--user", "admin", env=password)
    assert real.returncode == 0 and len(table(real.stdout)) == 2 and table(real.stdout)[1][0] == "pruned"
    after = await swarmreg("list", "--json", "--proxy", proxy, "--user", "admin", env=password)
    assert len(json.loads(after.stdout)["images"]) == 1


async def test_refusals_and_mistakes_are_one_line_and_a_status(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    proxy = herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=ADMIN) as client:
        await push_image(client, "team/app", "v1", [random_bytes(1000, seed=1)])
    home = {"HOME": str(tmp_path / "nobody")}  # no docker config: anonymous
    assert "UNAUTHORIZED" in one_line_error(await swarmreg("list", "--proxy", proxy, env=home), 1)
    assert "UNAUTHORIZED" in one_line_error(await swarmreg("prune", "--type", "pattern", "--expr", ".",
                                                           "--proxy", proxy, "--user", "admin",
                                                           env={"SWARMREG_PASSWORD": "wrong"}), 1)
    carol = docker_config(tmp_path / "carol", proxy, "carol", USERS["carol"])
    assert "DENIED" in one_line_error(await swarmreg("gc", "--proxy", proxy, "--docker-config", str(carol)), 1)
    environment = {k: v for k, v in os.environ.items() if k != "SWARMREG_PASSWORD"}
    unset = await trio.run_process([sys.executable, "-m", "swarmreg", "list", "--proxy", proxy, "--user", "admin"],
                                   capture_stdout=True, capture_stderr=True, check=False, env=environment)
    assert unset.returncode == 2 and b"SWARMREG_PASSWORD" in unset.stderr
    password = {"SWARMREG_PASSWORD": USERS["admin"]}
    for args, needle in ((["prune", "--type", "accessed"], "--dur"), (["prune", "--type", "created", "--dur", "3x"],
                                                                    "--dur"),
                         (["prune", "--type", "pattern"], "--expr"), (["list", "--count", "many"], "--count"),
                         (["list", "--blobs", "--pattern", "x"], "--blobs")):
        assert needle in one_line_error(await swarmreg(*args, "--proxy", proxy, "--user", "admin", env=password), 2)
    assert "does not exist" in one_line_error(
        await swarmreg("list", "--proxy", proxy, "--docker-config", str(tmp_path / "missing.json")), 2)
    (tmp_path / "broken.json").write_text("{not json")
    assert "cannot read docker config" in one_line_error(
        await swarmreg("list", "--proxy", proxy, "--docker-config", str(tmp_path / "broken.json")), 2)
    # The server's own refusal of a bad parameter reaches the user as one line too.
    bad = await swarmreg("list", "--pattern", "(", "--proxy", proxy, "--user", "admin", env=password)
    assert "BAD_REQUEST" in one_line_error(bad, 1)
    gone = await swarmreg("list", "--proxy", f"http://127.0.0.1:{free_port()}", "--user", "admin", env=password)
    assert "cannot reach the proxy" in one_line_error(gone, 1)
    # Nothing was pruned by any of it.
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=ADMIN) as client:
        assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_token_auth_goes_through_the_challenge(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, auth="token")
    proxy = herd.url("proxy")
    done = await swarmreg("list", "--blobs", "--proxy", proxy, "--user", "admin",
                          env={"SWARMREG_PASSWORD": USERS["admin"]})
    assert done.returncode == 0 and done.stdout == "no blobs found\n", done.stderr
    carol = await swarmreg("list", "--proxy", proxy, "--user", "carol", env={"SWARMREG_PASSWORD": USERS["carol"]})
    assert "UNAUTHORIZED" in one_line_error(carol, 1)  # her token lacks the admin scope


async def test_prune_then_gc_frees_the_bytes_of_the_pruned_image(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With the default grace period: a prune releases what only the pruned image named, as a
    delete does, so the next collection sweeps it; a layer the kept image shares stays."""
    herd = await start_herd(nursery, tmp_path)
    proxy = herd.url("proxy")
    shared = random_bytes(50_000, seed=3)
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=ADMIN) as client:
        await push_image(client, "team/kept", "v1", [random_bytes(100_000, seed=1), shared])
        await push_image(client, "team/gone", "v1", [random_bytes(300_000, seed=2), shared])
    password = {"SWARMREG_PASSWORD": USERS["admin"]}
    pruned = await swarmreg("prune", "--type", "pattern", "--expr", "^team/gone:", "--proxy", proxy,
                            "--user", "admin", env=password)
    assert pruned.returncode == 0, pruned.stderr
    data = Path(herd.config.data_dir)
    before = sum(blob_files(data).values())
    dry = await swarmreg("gc", "--dry-run", "--json", "--proxy", proxy, "--user", "admin", env=password)
    assert dry.returncode == 0 and json.loads(dry.stdout)["dry_run"] is True, dry.stderr
    assert sum(blob_files(data).values()) == before
    done = await swarmreg("gc", "--json", "--proxy", proxy, "--user", "admin", env=password)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    freed = before - sum(blob_files(data).values())
    # The layer, the config and the manifest: its own bytes, not the shared layer's.
    assert 300_000 < freed == report["bytes_freed"] < 350_000, report
    assert digest_of(shared).removeprefix("sha256:") in blob_files(data)
    text = await swarmreg("gc", "--proxy", proxy, "--user", "admin", env=password)
    assert text.returncode == 0 and ["dry_run", "false"] in table(text.stdout)
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=ADMIN) as client:
        kept = await client.get("/v2/team/kept/manifests/v1")
        assert kept.status_code == 200
        for layer in kept.json()["layers"]:
            assert (await client.get(f"/v2/team/kept/blobs/{layer['digest']}")).status_code == 200
