"""The Containerfile built with podman and run as an operator would: every role set starts,
answers its health checks and stops on SIGTERM within the daemon's deadline; an agent container
serves what was pushed through the herd's proxy, byte for byte; the daemon runs as a non-root
user, writes only to its data volume and keeps its data there; a bad configuration stops it with
a clear message and a non-zero status."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.cluster.probes import websocket_probe
from swarmreg.config import Address, load_config
from swarmreg.daemon import stop_deadline
from tests.conftest import free_port, random_bytes
from tests.proxy.helpers import DOCKER_MANIFEST, digest_of, push_blob, push_image

from .conftest import REPO, UID, Herd, start_herd
from .podman import DATA_DIR, RUN_FLAGS, Podman, start

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

# The image's configuration: what a container stops within, given SIGTERM.
IMAGE_CONFIG = REPO / "deploy" / "container" / "swarmreg.toml"


def image_deadline() -> float:
    config = load_config(IMAGE_CONFIG, ["cluster.secret_file="])
    return stop_deadline(config)


# Each role alone, pointed at the shared herd where it needs other roles.
def role_settings(role: str, herd: Herd) -> list[str]:
    port = {"origin": ["origin.listen", "swarm.listen"], "tracker": ["tracker.listen"], "index": ["index.listen"],
            "proxy": ["proxy.listen"], "agent": ["agent.listen", "agent.registry_listen", "swarm.listen"]}[role]
    needs = {"tracker": [f'tracker.origins=["{herd.address("origin")}"]'],
             "proxy": [f"proxy.origin={herd.address('origin')}", f"proxy.index={herd.address('index')}"],
             "agent": [f"agent.tracker={herd.address('tracker', 'ws')}", f"agent.index={herd.address('index')}"]}
    return [*(f"{key}=127.0.0.1:{free_port()}" for key in port), *needs.get(role, [])]


async def assert_healthy(ready: dict[str, object]) -> None:
    """Every port the daemon reported answers: /health on HTTP ports (and /v2/ on an agent's
    registry port), the tracker's websocket handshake."""
    roles = ready["roles"]
    assert isinstance(roles, dict)
    async with httpx.AsyncClient(timeout=10) as client:
        for role, ports in roles.items():
            for kind, address in ports.items():
                if kind == "http":
                    response = await client.get(f"http://{address}/health")
                    assert response.status_code == 200, (role, response.text)
                elif kind == "registry":
                    assert (await client.get(f"http://{address}/v2/")).status_code == 200
                elif kind == "ws":
                    await websocket_probe(None)(Address.parse(address))


@pytest.mark.parametrize("role", ["origin", "tracker", "index", "proxy", "agent"])
async def test_each_role_starts_healthy_and_stops_on_sigterm(podman: Podman, image: str, herd: Herd,
                                                             role: str) -> None:
    container = start(podman, image, f"only-{role}", role, role_settings(role, herd))
    ready = container.wait_ready()
    assert set(ready["roles"]) == {role}
    await assert_healthy(ready)
    elapsed, status = await container.stop(grace=int(image_deadline()) + 10)
    assert status == 0, container.logs()
    assert elapsed < image_deadline(), f"{role}: stopped after {elapsed:.1f} s"
    assert "stopped" in container.logs()


async def test_herd_serves_and_stops_on_sigterm(podman: Podman, image: str) -> None:
    herd = start_herd(podman, image, "herd-stop")
    assert set(herd.ready["roles"]) == {"origin", "tracker", "index", "proxy"}
    await assert_healthy(herd.ready)
    elapsed, status = await herd.container.stop(grace=int(image_deadline()) + 10)
    assert (status, elapsed < image_deadline()) == (0, True), herd.container.logs()


async def test_an_agent_container_serves_what_was_pushed_through_the_proxy(podman: Podman, image: str,
                                                                          herd: Herd) -> None:
    agent = start(podman, image, "agent", "agent", role_settings("agent", herd))
    registry = f"http://{agent.wait_ready()['roles']['agent']['registry']}"
    layers = [random_bytes(6 << 20, seed=1), random_bytes(300_000, seed=2)]  # a torrent, and an inline blob
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest, manifest = await push_image(proxy, "test/app", "v1", layers)
    async with httpx.AsyncClient(base_url=registry, timeout=120) as client:
        response = await client.get("/v2/test/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
        assert response.status_code == 200, response.text
        assert response.content == manifest and response.headers["docker-content-digest"] == digest
        for layer in layers:
            pulled = await client.get(f"/v2/test/app/blobs/{digest_of(layer)}")
            assert pulled.status_code == 200, pulled.text
            assert hashlib.sha256(pulled.content).digest() == hashlib.sha256(layer).digest()
            assert len(pulled.content) == len(layer)
    elapsed, status = await agent.stop(grace=int(image_deadline()) + 10)
    assert (status, elapsed < image_deadline()) == (0, True), agent.logs()


async def trickle(stop: trio.Event) -> AsyncIterator[bytes]:
    """An upload body that sends a byte every 0.2 s until ``stop``: a slow client mid-request."""
    while not stop.is_set():
        yield b"x"
        await trio.sleep(0.2)


async def test_sigterm_with_a_request_in_flight_stops_within_the_deadline(podman: Podman, image: str) -> None:
    herd = start_herd(podman, image, "herd-inflight", "shutdown_timeout=3")
    deadline = stop_deadline(load_config(None, ["shutdown_timeout=3"]))
    stopped = trio.Event()
    outcome: list[BaseException | int] = []

    async def slow_upload() -> None:
        async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as client:
            opened = await client.post("/v2/test/slow/blobs/uploads/")
            assert opened.status_code == 202, opened.text
            try:
                response = await client.patch(opened.headers["location"], content=trickle(stopped))
                outcome.append(response.status_code)
            except httpx.HTTPError as error:  # the daemon closed it at its deadline
                outcome.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_upload)
        await trio.sleep(1.5)  # the PATCH is being received
        elapsed, status = await herd.container.stop(grace=30)
        stopped.set()
    logs = herd.container.logs()
    assert status == 0, logs
    # It waited for the request (shutdown_timeout), then gave up on it before podman's SIGKILL.
    assert 3 <= elapsed < deadline + 1, f"stopped after {elapsed:.1f} s\n{logs}"
    assert "in-flight requests get 3 s" in logs
    assert outcome, "the upload never ended"


async def test_runs_as_a_non_root_user_with_its_data_on_the_volume(podman: Podman, image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert DATA_DIR in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"

    # Run as podman users would: the secret from podman's store, a writable root filesystem.
    herd = start_herd(podman, image, "herd-volume", volume="kept-data", read_only=False)
    assert podman("exec", "herd-volume", "id", "-u").stdout.strip() == str(UID)
    # Every process of the container: not root.
    users = podman("top", "herd-volume", "user", "huser").stdout.split()[2:]
    assert users and "root" not in users, users
    blob = random_bytes(2 << 20, seed=3)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        digest = await push_blob(proxy, "test/kept", blob)
    # The blob is in the volume, owned by the daemon's user.
    volume = herd.container.data_dir
    held = [path for path in volume.rglob("*") if path.is_file() and path.stat().st_size == len(blob)]
    assert held and all(path.stat().st_uid == UID for path in held), held
    assert volume.stat().st_uid == UID
    assert (await herd.container.stop(grace=20))[1] == 0
    podman("rm", "herd-volume")

    # A new container on the same volume (and the same ports) serves it again.
    settings = [f"{key}={herd.address(role, port)}" for key, role, port in (
        ("proxy.listen", "proxy", "http"), ("origin.listen", "origin", "http"), ("swarm.listen", "origin", "peer"),
        ("tracker.listen", "tracker", "ws"), ("index.listen", "index", "http"))]
    again = start(podman, image, "herd-volume-again", "origin,tracker,index,proxy", settings, volume="kept-data")
    again.wait_ready()
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        response = await proxy.get(f"/v2/test/kept/blobs/{digest}")
    assert response.status_code == 200 and response.content == blob
    assert (await again.stop(grace=20))[1] == 0


def run_once(podman: Podman, image: str, *args: str, options: tuple[str, ...] = ()) -> tuple[int, str]:
    """``podman run --rm [options] image args`` to completion: its exit status and output."""
    done = podman("run", "--rm", "--network", "none", *RUN_FLAGS, "--read-only", *options, image, *args,
                  timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def test_a_bad_configuration_exits_non_zero_with_a_clear_error(podman: Podman, image: str, tmp_path: Path) -> None:
    # The default command (the herd on every address) without the cluster secret.
    status, output = run_once(podman, image)
    assert status == 2, output
    assert "cluster.secret_file: cannot read /run/secrets/swarmreg-cluster-secret" in output

    bad = tmp_path / "bad.toml"
    bad.write_text('shutdown_timeout = "soon"\n[origin]\nlisten = 5\n[nonsense]\n')
    bad.chmod(0o644)
    status, output = run_once(podman, image, "daemon", "--roles", "origin", "--config", "/etc/swarmreg/bad.toml",
                              options=("-v", f"{bad}:/etc/swarmreg/bad.toml:ro"))
    assert status == 2, output
    for line in ("origin.listen: expected 'host:port', got 5", "nonsense: unknown key", "shutdown_timeout"):
        assert line in output
    assert "Traceback" not in output

    status, output = run_once(podman, image, "daemon", "--roles", "origin,nonsense")
    assert status == 2 and "unknown role 'nonsense'" in output, output


def test_a_data_directory_the_user_cannot_write_is_a_clear_error(podman: Podman, image: str) -> None:
    # The image's volume belongs to its user (10001, mode 0750): another uid, as a pod with the
    # wrong runAsUser would be, cannot use it.
    status, output = run_once(podman, image, "daemon", "--roles", "index", "--data-dir", DATA_DIR,
                              f"--set=index.listen=127.0.0.1:{free_port()}",
                              options=("--user", "12345:12345", "-v", f"unwritable-data:{DATA_DIR}"))
    assert status == 2, output
    assert "Permission denied" in output and DATA_DIR in output and "Traceback" not in output
