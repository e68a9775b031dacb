"""``swarmreg load`` and ``swarmreg daemon --preload-images`` (issue 12, point 5), run as the
commands they are, against real daemons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from swarmreg.devcluster import DaemonProcess, port_zero
from tests.conftest import random_bytes
from tests.preheat.helpers import HERD, forget_seeds, push_multiarch, push_test_image, seeded, start_herd
from tests.preheat.test_preheat_input import USERS, start_guarded


async def swarmreg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([sys.executable, "-m", "swarmreg", *args], capture_stdout=True,
                                  capture_stderr=True, check=False, env={**os.environ, **(env or {})})


async def test_swarmreg_load_loads_a_list_and_says_what_failed(nursery: trio.Nursery, tmp_path: Path):
    data_dir = tmp_path / "herd"
    herd = await start_herd(nursery, data_dir)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, "team/app", "v1", [random_bytes(200_000, seed=1)])
        index, children = await push_multiarch(proxy, "team/multi", "v2", {
            "amd64": [random_bytes(1000, seed=2)], "arm64": [random_bytes(2000, seed=3)]})
    await herd.stop()
    forget_seeds(data_dir)
    herd = await start_herd(nursery, data_dir)
    listing = tmp_path / "images.txt"
    listing.write_text(f"# what the deploy needs\n\n{image.reference}\n   {index.reference}   # both arches\n")
    done = await swarmreg("load", "--image-file", str(listing), "--proxy", herd.url("proxy"))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [f"loaded {image.reference} {image.digest}",
                                                 f"loaded {index.reference} {index.digest}"]
    assert "images 2/2 (0 failed)" in done.stderr.decode()
    assert set(image.blobs) | set(index.blobs) <= await seeded(herd.url("origin"))
    # One image missing: status 1, the error printed; the others still load.
    listing.write_text(f"team/nothing:v1\n{image.reference}\n")
    failed = await swarmreg("load", "--image-file", str(listing), "--proxy", herd.url("proxy"), "--platform",
                            "linux/amd64")
    assert failed.returncode == 1
    assert "FAILED team/nothing:v1: image team/nothing:v1 not found" in failed.stdout.decode()
    assert f"loaded {image.reference}" in failed.stdout.decode()
    # A list or option that cannot be used: status 2, nothing posted, the line named.
    listing.write_text(f"{image.reference}\nBad/Reference\n")
    bad = await swarmreg("load", "--image-file", str(listing), "--proxy", herd.url("proxy"))
    assert bad.returncode == 2 and f"{listing} line 2: invalid repository" in bad.stderr.decode()
    for option in (["--platform", "amd64"], ["--agents", "0"]):
        listing.write_text(f"{image.reference}\n")
        assert (await swarmreg("load", "--image-file", str(listing), *option)).returncode == 2
    assert (await swarmreg("load", "--image-file", str(tmp_path / "missing.txt"))).returncode == 2
    # No proxy there: status 1, saying so.
    unreachable = await swarmreg("load", "--image-file", str(listing), "--proxy", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach the proxy" in unreachable.stderr.decode()


async def test_swarmreg_load_signs_in_with_username_and_the_password_variable(nursery: trio.Nursery, tmp_path: Path):
    url = await start_guarded(nursery, tmp_path, "token")
    listing = tmp_path / "images.txt"
    listing.write_text("a/one:1\n")
    args = ("load", "--image-file", str(listing), "--proxy", url)
    signed_in = await swarmreg(*args, "--username", "carol", env={"SWARMREG_PASSWORD": USERS["carol"]})
    assert signed_in.returncode == 0, signed_in.stderr.decode()
    anonymous = await swarmreg(*args)
    assert anonymous.returncode == 1 and "UNAUTHORIZED" in anonymous.stderr.decode()
    wrong = await swarmreg(*args, "--username", "carol", env={"SWARMREG_PASSWORD": "nope"})
    assert wrong.returncode == 1 and "UNAUTHORIZED" in wrong.stderr.decode()
    no_password = await swarmreg(*args, "--username", "carol", env={"SWARMREG_PASSWORD": ""})
    assert no_password.returncode == 1  # an empty password is a wrong one
    env = {k: v for k, v in os.environ.items() if k != "SWARMREG_PASSWORD"}
    unset = await trio.run_process([sys.executable, "-m", "swarmreg", *args, "--username", "carol"],
                                   capture_stderr=True, check=False, env=env)
    assert unset.returncode == 2 and b"SWARMREG_PASSWORD" in unset.stderr


class PreloadingDaemon(DaemonProcess):
    """``swarmreg daemon`` with ``--preload-images``."""

    def __init__(self, *args, preload: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.preload = preload

    @property
    def argv(self) -> list[str]:
        return [*super().argv, "--preload-images", str(self.preload)]


async def test_the_daemon_preloads_a_list_while_it_serves(nursery: trio.Nursery, tmp_path: Path):
    data_dir = tmp_path / "herd"
    herd = await start_herd(nursery, data_dir)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, "team/app", "v1", [random_bytes(300_000, seed=1)])
    await herd.stop()
    forget_seeds(data_dir)
    listing = tmp_path / "images.txt"
    listing.write_text(f"{image.reference}\nteam/nothing:v1\n")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as stderr:
        process = PreloadingDaemon("herd", HERD, data_dir, overrides=port_zero(HERD), stderr=stderr, preload=listing)
        try:
            await process.start()
            with trio.fail_after(60):
                while "preload failed: 1 of 2 image(s) loaded" not in log.read_text():
                    await trio.sleep(0.1)
            text = log.read_text()
            assert f"preload 1/2: {image.reference} loaded ({image.digest})" in text or \
                f"preload 2/2: {image.reference} loaded ({image.digest})" in text, text
            assert "team/nothing:v1 failed: image team/nothing:v1 not found" in text
            assert set(image.blobs) <= await seeded(process.url("origin"))
            async with httpx.AsyncClient(base_url=process.url("proxy"), timeout=30) as proxy:
                assert (await proxy.get("/v2/")).status_code == 200
        finally:
            await process.stop()
    # Without the proxy, the index and origin roles are enough.
    forget_seeds(data_dir)
    listing.write_text(f"{image.reference}\n")
    with open(log, "wb") as stderr:
        roles = ["origin", "index"]
        process = PreloadingDaemon("store", roles, data_dir, overrides=port_zero(roles), stderr=stderr, preload=listing)
        try:
            await process.start()
            with trio.fail_after(60):
                while "preload done: 1 of 1 image(s) loaded" not in log.read_text():
                    await trio.sleep(0.1)
            assert set(image.blobs) <= await seeded(process.url("origin"))
        finally:
            await process.stop()


async def test_a_daemon_that_cannot_preload_says_why_at_start(tmp_path: Path):
    listing = tmp_path / "images.txt"
    listing.write_text("team/app:v1\n\n# fine so far\nteam/app:no good\n")
    base = ["daemon", "--data-dir", str(tmp_path / "data")]
    for roles, overrides, file, message in [
        ("proxy,index,origin,tracker", port_zero(HERD), listing, f"{listing} line 4: invalid tag or digest"),
        ("agent", port_zero(["agent"]), listing, "--preload-images needs the proxy role, or the index and origin"),
        ("index,origin", port_zero(["index", "origin"]), tmp_path / "missing", "cannot read"),
    ]:
        sets = [item for override in overrides for item in ("--set", override)]
        done = await swarmreg(*base, "--roles", roles, *sets, "--preload-images", str(file))
        assert done.returncode == 2 and message in done.stderr.decode(), done.stderr.decode()
