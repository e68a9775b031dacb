"""`swarmreg devcluster --ha` as a real process: 20 pulls in flight through both agents while one
origin, then one tracker, then one index node is SIGKILLed by its pid in cluster.json; pushes
while the origin is dead; the origin started again and repair giving every blob its 2 owners back;
a stop while it starts; ``--second-cluster`` receiving a pushed tag by replication.

It uses the devcluster's fixed ports (the one test that may), and prints the failover figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from swarmreg.devcluster_ha import POSTGRES, REDIS, ha_specs, replica_specs
from swarmreg.devservers import ServerError, postgres_binaries
from tests.conftest import random_bytes
from tests.origin.helpers import blob_path
from tests.proxy.helpers import digest_of, push_image
from tests.test_devcluster import busy_port, devcluster_ports, endpoint_table

MiB = 1 << 20
LAYER = 8 * MiB
PULLS = 20  # in flight when a node is killed, half through each agent
LATE = 4  # started just after the kill, while the cluster finds the node dead
AGENTS = ("http://127.0.0.1:16000", "http://127.0.0.1:17000")
PROXY = "http://127.0.0.1:15000"
# The pulls start this long apart; the kill lands once all have started, the late ones a moment
# after it. Agents download at most AGENT_RATE each, so that every pull is still running then.
STAGGER = 0.01
LATE_AFTER = 0.3
AGENT_RATE = "16MiB"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def ha_ports_free() -> None:
    """Skip without PostgreSQL, or when a port of the HA devcluster is taken (see tests/test_devcluster.py)."""
    try:
        postgres_binaries()
    except ServerError as missing:
        pytest.skip(str(missing))
    if (port := busy_port([*devcluster_ports(ha_specs()), REDIS.port, POSTGRES.port])) is not None:
        pytest.skip(f"devcluster port 127.0.0.1:{port} is in use (a devcluster running?)")


@attrs.define
class Pull:
    """One pull through an agent's registry port: the tag's manifest, then its layer."""

    agent: str
    repository: str
    digest: str
    started: float = 0.0
    ended: float | None = None
    errors: list[str] = attrs.Factory(list)

    @property
    def seconds(self) -> float:
        assert self.ended is not None
        return self.ended - self.started


async def pull_once(client: httpx.AsyncClient, pull: Pull) -> None:
    """Raise unless the manifest names the layer and the layer's bytes hash to its digest."""
    manifest = await client.get(f"/v2/{pull.repository}/manifests/v1")
    if manifest.status_code != 200:
        raise RuntimeError(f"manifest: {manifest.status_code} {manifest.text[:200]}")
    layers = [layer["digest"] for layer in json.loads(manifest.content)["layers"]]
    assert layers == [pull.digest], layers
    hashed, size = hashlib.sha256(), 0
    async with client.stream("GET", f"/v2/{pull.repository}/blobs/{pull.digest}") as response:
        if response.status_code != 200:
            raise RuntimeError(f"blob: {response.status_code} {(await response.aread())[:200]!r}")
        async for chunk in response.aiter_bytes():
            hashed.update(chunk)
            size += len(chunk)
    if f"sha256:{hashed.hexdigest()}" != pull.digest or size != LAYER:
        raise RuntimeError(f"blob: {size} bytes that do not match {pull.digest}")


async def run_pull(client: httpx.AsyncClient, pull: Pull) -> None:
    """The pull, tried again once after a failure (as docker does); its errors are kept."""
    pull.started = trio.current_time()
    for _attempt in range(2):
        try:
            await pull_once(client, pull)
        except (httpx.HTTPError, RuntimeError) as error:
            pull.errors.append(f"{type(error).__name__}: {error}")
            continue
        pull.ended = trio.current_time()
        return


@attrs.frozen
class Figures:
    victim: str
    in_flight: int  # pulls started and not finished when the kill landed
    late: int  # pulls started after it
    retried: int  # pulls whose first attempt failed
    failed: int  # pulls that failed after their retry
    longest: float | None  # seconds, the longest pull of the round (None: one failed)

    def __str__(self) -> str:
        longest = "-" if self.longest is None else f"{self.longest:.1f} s"
        return (f"{self.victim}: {self.in_flight} pulls in flight at the kill, {self.late} started after it, "
                f"{self.retried} retried, {self.failed} failed, the longest {longest}")


class HaCluster:
    """The running devcluster, as cluster.json describes it."""

    def __init__(self, data_dir: Path, process: trio.Process) -> None:
        self.data_dir = data_dir
        self.process = process

    @property
    def doc(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.data_dir / "cluster.json").read_text())
        return document

    def nodes(self, role: str) -> list[dict[str, Any]]:
        return [node for node in self.doc["nodes"] if role in node["roles"]]

    def node(self, name: str) -> dict[str, Any]:
        return next(node for node in self.doc["nodes"] if node["name"] == name)

    def origin_of(self, address: Address) -> dict[str, Any]:
        return next(node for node in self.nodes("origin") if node["addresses"]["origin"] == f"http://{address}")

    def members(self, role: str) -> list[Address]:
        return [Address.parse(node["addresses"][role].split("://")[1]) for node in self.nodes(role)]

    def kill(self, name: str) -> None:
        os.kill(self.node(name)["pid"], signal.SIGKILL)


def layer(round_number: int, n: int) -> bytes:
    return random_bytes(LAYER, seed=1000 * round_number + n)


async def push_round(proxy: httpx.AsyncClient, prefix: str, round_number: int, count: int) -> list[tuple[str, str]]:
    """Push ``count`` images of one 8 MiB layer each (4 at once); their (repository, layer digest)."""
    pushed: list[tuple[str, str]] = [("", "")] * count
    limit = trio.Semaphore(4)

    async def one(n: int) -> None:
        async with limit:
            data = layer(round_number, n)
            repository = f"{prefix}/image-{n}"
            await push_image(proxy, repository, "v1", [data])
            pushed[n] = (repository, digest_of(data))

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
    return pushed


async def on_origins(cluster: HaCluster, client: httpx.AsyncClient, repository: str, digest: str) -> set[str]:
    """The origins that hold the blob in their own store (HEAD ?local=true)."""
    held = set()
    for node in cluster.nodes("origin"):
        try:
            response = await client.head(node["addresses"]["origin"] + blob_path(repository, digest),
                                          params={"local": "true"})
        except httpx.TransportError:
            continue
        if response.status_code == 200:
            held.add(node["name"])
    return held


async def replicated(cluster: HaCluster, client: httpx.AsyncClient, blobs: Sequence[tuple[str, str]],
                     timeout: float) -> None:
    """Wait until each blob is on 2 origins: its owners by the ring."""
    members = cluster.members("origin")
    with trio.fail_after(timeout):
        for repository, digest in blobs:
            owners = {cluster.origin_of(member)["name"] for member in rank(digest, members)[:2]}
            while not owners <= await on_origins(cluster, client, repository, digest):
                await trio.sleep(0.2)


async def pull_round(cluster: HaCluster, blobs: Sequence[tuple[str, str]], victim: str | None,
                     during: Any = None) -> Figures:
    """PULLS + LATE pulls through both agents, ``victim`` SIGKILLed (by its pid in cluster.json)
    once PULLS of them run, then ``during`` run (a push, say); the figures of the round."""
    pulls = [Pull(AGENTS[n % 2], repository, digest) for n, (repository, digest) in enumerate(blobs)]
    clients = {agent: httpx.AsyncClient(base_url=agent, timeout=60) for agent in AGENTS}
    in_flight = 0
    try:
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for n, pull in enumerate(pulls):
                    if n == PULLS:
                        in_flight = sum(p.started > 0 and p.ended is None for p in pulls)
                        if victim is not None:
                            cluster.kill(victim)
                        await trio.sleep(LATE_AFTER)
                    nursery.start_soon(run_pull, clients[pull.agent], pull)
                    await trio.sleep(STAGGER)
                if during is not None:
                    await during()
    finally:
        for client in clients.values():
            await client.aclose()
    failed = [p for p in pulls if p.ended is None]
    figures = Figures(victim or "no kill", in_flight, len(pulls) - PULLS, sum(bool(p.errors) for p in pulls),
                      len(failed), None if failed else max(p.seconds for p in pulls))
    print(f"\n{figures}; errors: {[e for p in pulls for e in p.errors]}")
    assert not failed, [(p.repository, p.agent, p.errors) for p in failed]
    return figures


async def evict(blobs: Sequence[tuple[str, str]]) -> None:
    """Make both agents drop the blobs (and so fetch them again from the swarm)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for n, (_repository, digest) in enumerate(blobs):
            agent = AGENTS[n % 2].replace("000", "002")  # the blob API beside the registry port
            with trio.fail_after(30):
                while (response := await client.delete(f"{agent}/cmd/evict", params={"digest": digest})).status_code \
                        == 409:  # still being served
                    await trio.sleep(0.1)
            assert response.status_code == 200, response.text


def leftovers(data_dir: Path) -> str:
    """Processes whose command line names the data directory (pgrep -af)."""
    found = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True)
    return found.stdout.strip()


async def stops_cleanly(process: trio.Process, data_dir: Path) -> None:
    """SIGTERM stops the devcluster, status 0, within a minute, and no process of it is left."""
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        assert await process.wait() == 0
    assert not leftovers(data_dir), leftovers(data_dir)


async def reap(process: trio.Process, data_dir: Path) -> None:
    """Kill the devcluster and whatever it left running (a failed test's)."""
    process.kill()
    await process.wait()
    for line in leftovers(data_dir).splitlines():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


async def test_pulls_survive_a_kill_of_each_role(tmp_path: Path, ha_ports_free: None) -> None:
    # Under pytest's own temporary directory, which only root may enter: PostgreSQL (which
    # refuses to run as root) must run there anyway.
    data_dir = tmp_path / "ha"
    log = open(tmp_path / "devcluster.log", "wb")  # noqa: SIM115 - closed in finally
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "swarmreg", "devcluster", "--ha", "--data-dir", str(data_dir),
         "--set-agents", f"swarm.download_rate_limit={AGENT_RATE}"],
        stdout=subprocess.PIPE, stderr=log)
    cluster = HaCluster(data_dir, process)
    figures: list[Figures] = []
    try:
        table = await endpoint_table(process, b"kill -HUP", 150)
        doc = cluster.doc
        assert doc["pid"] == process.pid
        assert sorted(n["name"] for n in doc["nodes"]) == sorted(spec.name for spec in ha_specs())
        roles = ("origin", "tracker", "index", "proxy", "agent")
        assert [len(cluster.nodes(role)) for role in roles] == [3, 3, 2, 1, 2]
        for node in doc["nodes"]:
            os.kill(node["pid"], 0)  # alive
            for address in node["addresses"].values():
                assert address in table, f"{node['name']}'s {address} is not in the endpoint table"
        for server in ("redis", "postgres"):
            os.kill(doc[server]["pid"], 0)
            assert doc[server]["address"] in table
        assert cluster.node("agent-one")["addresses"] == {
            "registry": "http://127.0.0.1:16000", "blobs": "http://127.0.0.1:16002", "peer": "tcp://127.0.0.1:16001"}

        async with httpx.AsyncClient(base_url=PROXY, timeout=60) as proxy, httpx.AsyncClient(timeout=10) as client:
            blobs = await push_round(proxy, "ha/pulls", 1, PULLS + LATE)
            await replicated(cluster, client, blobs, timeout=60)
            figures.append(await pull_round(cluster, blobs, None))  # what the pulls take without a kill

            # An origin: the first owner of most of the blobs; pushes while it is dead.
            await evict(blobs)
            firsts = [rank(digest, cluster.members("origin"))[0] for _, digest in blobs]
            victim = cluster.origin_of(max(set(firsts), key=firsts.count))["name"]
            pushed_meanwhile: list[tuple[str, str]] = []

            async def push_while_dead() -> None:
                pushed_meanwhile.extend(await push_round(proxy, "ha/during", 2, 3))

            figures.append(await pull_round(cluster, blobs, victim, push_while_dead))
            assert len(pushed_meanwhile) == 3
            dead_pid = cluster.node(victim)["pid"]
            with trio.fail_after(10):
                while cluster.node(victim)["running"]:  # the devcluster saw it die
                    await trio.sleep(0.1)

            # Started again (the devcluster's SIGHUP), it gets back the blobs it owns: all of
            # them are on 2 origins, the replicas made while it was dead too.
            members = cluster.members("origin")
            address = Address.parse(cluster.node(victim)["addresses"]["origin"].split("://")[1])
            assert [b for b in pushed_meanwhile if address in rank(b[1], members)[:2]], "it owes it some"
            os.kill(process.pid, signal.SIGHUP)
            with trio.fail_after(60):
                while not (node := cluster.node(victim))["running"] or node["pid"] == dead_pid:
                    await trio.sleep(0.2)
            assert node["restarts"] == 1 and node["argv"] and node["addresses"]["origin"]
            started = trio.current_time()
            await replicated(cluster, client, [*blobs, *pushed_meanwhile], timeout=60)
            print(f"\nrepair: every blob on its 2 owners {trio.current_time() - started:.1f} s after the restart")

            # The tracker and the index node the agents use: the first of the ring's order.
            for role in ("tracker", "index"):
                await evict(blobs)
                first = rank("", cluster.members(role))[0]
                victim = next(n["name"] for n in cluster.nodes(role) if n["addresses"][role].endswith(f"//{first}"))
                figures.append(await pull_round(cluster, blobs, victim))

        assert all(f.in_flight == PULLS for f in figures), [str(f) for f in figures]
        await stops_cleanly(process, data_dir)
    finally:
        await reap(process, data_dir)
        log.close()
        print("\nfailover figures:" + "".join(f"\n  {f}" for f in figures))


async def test_a_stop_while_it_starts_leaves_nothing_behind(tmp_path: Path, ha_ports_free: None) -> None:
    data_dir = tmp_path / "ha"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "swarmreg", "devcluster", "--ha", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(60):  # Redis, PostgreSQL and the origins are up, the rest starting
            while len(leftovers(data_dir).splitlines()) < 5:
                await trio.sleep(0.1)
        await stops_cleanly(process, data_dir)
    finally:
        await reap(process, data_dir)


async def test_the_second_cluster_receives_every_tag(tmp_path: Path, ha_ports_free: None) -> None:
    if (port := busy_port(devcluster_ports(replica_specs()))) is not None:
        pytest.skip(f"second cluster port 127.0.0.1:{port} is in use")
    data_dir = tmp_path / "ha"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "swarmreg", "devcluster", "--ha", "--second-cluster", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        table = await endpoint_table(process, b"kill -HUP", 150)
        second = json.loads((data_dir / "cluster.json").read_text())["second_cluster"]
        assert second["proxy"] == "http://127.0.0.1:18000"
        assert [n["name"] for n in second["nodes"]] == ["replica-herd", "replica-agent"]
        for node in second["nodes"]:
            os.kill(node["pid"], 0)
            assert all(address in table for address in node["addresses"].values())
        data = random_bytes(2 * MiB, seed=99)
        async with httpx.AsyncClient(base_url=PROXY, timeout=60) as proxy:
            _, manifest = await push_image(proxy, "team/replicated", "v1", [data])
        async with httpx.AsyncClient(base_url="http://127.0.0.1:19000", timeout=60) as replica:
            with trio.fail_after(60):  # the index nodes' replicator sends it in the background
                while (pulled := await replica.get("/v2/team/replicated/manifests/v1")).status_code != 200:
                    await trio.sleep(0.5)
            assert pulled.content == manifest
            layer = await replica.get(f"/v2/team/replicated/blobs/{digest_of(data)}")
            assert layer.status_code == 200 and layer.content == data
        await stops_cleanly(process, data_dir)
    finally:
        await reap(process, data_dir)
