"""``swarmreg devcluster --ha``: every role as a ring of its own processes on one machine, with
Redis under the trackers and PostgreSQL under the index nodes (docs/cluster.md, "The HA devcluster").

Each node is one daemon process, so killing one (by the pid in ``DATA_DIR/cluster.json``) kills
one member of one role. SIGHUP to the devcluster starts again every node and server that is not
running, with the same data and ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from swarmreg.config import Address, ConfigError
from swarmreg.devcluster import (
    DEVCLUSTER,
    DaemonProcess,
    DaemonStartError,
    NodeSpec,
    check_settings,
    default_registry_overrides,
    endpoint_rows,
    print_table,
    relay_lines,
    run_in_data_dir,
    upstream_overrides,
)
from swarmreg.devservers import PostgresServer, RedisServer, ServerError, ServerProcess
from swarmreg.logs import setup_logging

HOST = "127.0.0.1"
PROXY_PORT = 15000
REDIS = Address(HOST, 15105)
POSTGRES = Address(HOST, 15106)
ORIGINS, TRACKERS, INDEXES = 3, 3, 2
REPLICAS = 2
CLUSTER_JSON = "cluster.json"
# A daemon that has not stopped this long after SIGTERM is killed (its own graceful deadline,
# shutdown_timeout, is 10 s).
STOP_TIMEOUT = 20.0
# What each (role, port) of a ready document is called in cluster.json, and its URL scheme.
ADDRESS_KEYS = {("proxy", "http"): ("proxy", "http"), ("origin", "http"): ("origin", "http"),
                ("tracker", "ws"): ("tracker", "ws"), ("index", "http"): ("index", "http"),
                ("agent", "registry"): ("registry", "http"), ("agent", "http"): ("blobs", "http")}
# --second-cluster: the plain devcluster's herd and one agent, on these ports instead of 150xx
# and 160xx, which every tag pushed to the HA cluster reaches by replication.
REPLICA_PORTS = {"127.0.0.1:150": "127.0.0.1:180", "127.0.0.1:160": "127.0.0.1:190"}
REPLICA_PROXY = "http://127.0.0.1:18000"
# Which of the HA nodes start together: each tier's clients are the tiers before it.
TIERS = (("origin",), ("tracker", "index"), ("proxy",), ("agent",))


def member_port(member: int, digit: int) -> int:
    """Member ``member`` (from 0) of a ring listens on 151<member><digit>; the digit is the plain
    devcluster's for the port (1 peer wire, 2 origin, 3 tracker, 4 index)."""
    return 15100 + 10 * member + digit


def _list(key: str, addresses: Sequence[Address]) -> str:
    return f"{key}=[" + ", ".join(f'"{address}"' for address in addresses) + "]"


def ha_specs() -> tuple[NodeSpec, ...]:
    """The HA devcluster's nodes, each with its ports and the rings every client uses."""
    origins = [Address(HOST, member_port(m, 2)) for m in range(ORIGINS)]
    trackers = [Address(HOST, member_port(m, 3)) for m in range(TRACKERS)]
    indexes = [Address(HOST, member_port(m, 4)) for m in range(INDEXES)]
    rings = (_list("cluster.origins", origins), _list("cluster.trackers", trackers),
             _list("cluster.indexes", indexes), f"origin.replicas={REPLICAS}")
    specs = [NodeSpec(f"origin-{m + 1}", ("origin",),
                      (f"origin.listen={address}", f"swarm.listen={HOST}:{member_port(m, 1)}", *rings),
                      ((f"origin {m + 1}: blob uploads (Kraken API)", "origin", "http"),))
             for m, address in enumerate(origins)]
    specs += [NodeSpec(f"tracker-{m + 1}", ("tracker",), (f"tracker.listen={address}", *rings),
                       ((f"tracker {m + 1}: announce channel", "tracker", "ws"),))
              for m, address in enumerate(trackers)]
    specs += [NodeSpec(f"index-{m + 1}", ("index",), (f"index.listen={address}", *rings),
                       ((f"index {m + 1}: tags and manifests", "index", "http"),))
              for m, address in enumerate(indexes)]
    specs.append(NodeSpec("proxy", ("proxy",), (
        f"proxy.listen={HOST}:{PROXY_PORT}", *rings,
        # As on the plain devcluster: anonymous pushes, deletes and admin API on loopback.
        'proxy.access=[{user = "anonymous", repositories = ".*", actions = ["pull", "push", "delete", "admin"]}]'),
        (("proxy: docker push (registry API)", "proxy", "http"),)))
    for name, base in (("one", 16000), ("two", 17000)):
        specs.append(NodeSpec(f"agent-{name}", ("agent",), (
            f"agent.registry_listen={HOST}:{base}", f"swarm.listen={HOST}:{base + 1}",
            f"agent.listen={HOST}:{base + 2}", *rings),
            ((f"agent {name}: docker pull (registry API)", "agent", "registry"),
             (f"agent {name}: blob downloads", "agent", "http"))))
    return tuple(specs)


def replica_specs() -> tuple[NodeSpec, ...]:
    """The second cluster's herd and agent: the plain devcluster's, on REPLICA_PORTS."""
    def moved(text: str) -> str:
        for old, new in REPLICA_PORTS.items():
            text = text.replace(old, new)
        return text

    return tuple(NodeSpec(name, spec.roles, tuple(moved(o) for o in spec.overrides),
                          tuple((f"second cluster's {what}", role, port) for what, role, port in spec.endpoints))
                 for name, spec in (("replica-herd", DEVCLUSTER[0]), ("replica-agent", DEVCLUSTER[1])))


def _index_config(node_dir: Path, database_url: str) -> Path:
    """A config file (mode 0600: the URL has PostgreSQL's password) naming the index's database,
    so the node's command line alone starts it again."""
    import tomli_w

    node_dir.mkdir(parents=True, exist_ok=True)
    path = node_dir / "devcluster.toml"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(tomli_w.dumps({"index": {"database": database_url}}))
    return path


class HaDevcluster:
    """The HA devcluster's servers and nodes, run until SIGINT or SIGTERM."""

    def __init__(self, data_dir: Path, upstreams: Sequence[str], herd: Sequence[str], agents: Sequence[str],
                 second_cluster: bool = False) -> None:
        self.data_dir = data_dir
        self.specs = ha_specs()
        self.replica_specs = replica_specs() if second_cluster else ()
        self.redis = RedisServer(data_dir / "redis", REDIS)
        self.postgres = PostgresServer(data_dir / "postgres", POSTGRES)
        self.servers: tuple[ServerProcess, ...] = (self.redis, self.postgres)
        self.nodes: list[DaemonProcess] = []
        self.replica: list[DaemonProcess] = []  # the second cluster's
        self.restarts: dict[str, int] = {}
        self._upstreams = upstreams
        self._herd = tuple(herd)
        self._agents = tuple(agents)
        self._nursery: trio.Nursery | None = None
        self._stopping = False

    def _node(self, spec: NodeSpec) -> DaemonProcess:
        role = spec.roles[0]
        extra: list[str] = []
        config_file = None
        if role == "tracker":
            extra.append(f'tracker.store="{self.redis.url()}"')  # a secret: kept off the command line
        if role == "index":
            config_file = _index_config(self.data_dir / spec.name, self.postgres.url())
            if self.replica_specs:  # every tag, to the second cluster's proxy
                extra.append(f'index.replicate=[{{repository = ".*", remote = "{REPLICA_PROXY}"}}]')
        # The origins and the indexes pull through to upstreams; everyone reads the default registry.
        extra += upstream_overrides(self._upstreams) if role in ("origin", "index") \
            else default_registry_overrides(self._upstreams)
        extra += self._agents if role == "agent" else self._herd
        return DaemonProcess(spec.name, spec.roles, self.data_dir / spec.name, overrides=(*spec.overrides, *extra),
                             config_file=config_file, stderr=subprocess.PIPE)

    @property
    def every_node(self) -> list[DaemonProcess]:
        return [*self.nodes, *self.replica]

    async def run(self) -> None:
        """Start everything, serve until SIGINT or SIGTERM (SIGHUP: ``restart_stopped``), stop
        everything. Signals are ours from the start: one during the start stops what started."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                starting = trio.CancelScope()
                start_ended = trio.Event()
                nursery.start_soon(self._start_all, starting, start_ended)
                try:
                    async for signum in signals:
                        if signum != signal.SIGHUP:
                            break
                        if start_ended.is_set():  # (a failed start cancels this loop)
                            await self.restart_stopped()
                    print("\nstopping the devcluster ...", file=sys.stderr)
                finally:
                    with trio.CancelScope(shield=True):
                        starting.cancel()
                        await start_ended.wait()
                        await self.stop()
                    nursery.cancel_scope.cancel()  # the watchers and relays

    async def _start_all(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """The servers, then the nodes tier by tier, then cluster.json and the endpoint table."""
        try:
            with scope:
                assert self._nursery is not None
                for server in self.servers:
                    await server.start(relay_lines, self._nursery)
                self.nodes = [self._node(spec) for spec in self.specs]
                self.replica = [DaemonProcess(spec.name, spec.roles, self.data_dir / spec.name,
                                              overrides=spec.overrides, stderr=subprocess.PIPE)
                                for spec in self.replica_specs]
                for tier in TIERS:  # the second cluster's herd with the origins, its agent with the agents
                    group = [node for node in self.every_node if node.roles[0] in tier]
                    for node in group:
                        await self._spawn(node)
                    for node in group:
                        await node.wait_ready()
                self.write_cluster_json()
                self._print_table()
        finally:
            done.set()

    def _print_table(self) -> None:
        rows = endpoint_rows([*self.specs, *self.replica_specs], self.every_node, tls=False)
        rows += [(f"{server.name}: {what}", server.name, url) for server, what, url in (
            (self.redis, "the trackers' peer store", f"redis://{self.redis.address}"),
            (self.postgres, "the index nodes' database", self.postgres.url(False)))]
        print_table(rows, self.data_dir, tls=False, upstreams=self._upstreams, extra=(
            f"  nodes, pids and addresses: {self.data_dir / CLUSTER_JSON}; kill -HUP {os.getpid()} "
            "starts again the nodes that are not running",))

    async def _spawn(self, node: DaemonProcess) -> None:
        assert self._nursery is not None
        process = await node.spawn()
        assert process.stderr is not None  # stderr=PIPE
        self._nursery.start_soon(relay_lines, node.name, process.stderr)
        self._nursery.start_soon(self._watch, node, process)

    async def _watch(self, node: DaemonProcess, process: trio.Process) -> None:
        """Say when a node exits on its own (killed), and record it in cluster.json."""
        status = await process.wait()
        # Not a stop (ours, or Ctrl-C's SIGINT to the whole process group), nor a failed start.
        if node.process is process and node.ready and status != 0 and not self._stopping:
            how = f"signal {-status}" if status < 0 else f"status {status}"
            print(f"devcluster: {node.name} (pid {process.pid}) exited with {how}; "
                  f"kill -HUP {os.getpid()} starts it again", file=sys.stderr, flush=True)
            self.write_cluster_json()

    async def restart_stopped(self) -> None:
        """Start again every server and node that is not running (same argv, data and ports)."""
        assert self._nursery is not None
        for server in self.servers:
            if not server.running:
                print(f"devcluster: starting {server.name} again", file=sys.stderr, flush=True)
                await server.start(relay_lines, self._nursery)
        for node in self.every_node:
            if node.process is None or node.process.poll() is not None:
                print(f"devcluster: starting {node.name} again", file=sys.stderr, flush=True)
                self.restarts[node.name] = self.restarts.get(node.name, 0) + 1
                node.ready = {}
                await self._spawn(node)
                try:
                    await node.wait_ready()
                except DaemonStartError as error:
                    print(f"devcluster: {error}", file=sys.stderr, flush=True)
        self.write_cluster_json()

    async def stop(self) -> None:
        """Stop every node at once (SIGTERM, then SIGKILL after STOP_TIMEOUT), then the servers."""
        self._stopping = True
        async with trio.open_nursery() as nursery:
            for node in self.every_node:
                nursery.start_soon(node.stop, STOP_TIMEOUT)
        async with trio.open_nursery() as nursery:
            for server in self.servers:
                nursery.start_soon(server.stop)

    def describe(self) -> dict[str, Any]:
        """cluster.json's document: the devcluster, every node, Redis and PostgreSQL (and the
        second cluster's nodes, apart: they are no member of the HA cluster's rings)."""
        document = {"pid": os.getpid(), "data_dir": str(self.data_dir),
                    "nodes": [self._describe(node) for node in self.nodes],
                    "redis": self.redis.describe(), "postgres": self.postgres.describe()}
        if self.replica_specs:
            document["second_cluster"] = {"proxy": REPLICA_PROXY, "nodes": [self._describe(n) for n in self.replica]}
        return document

    def _describe(self, node: DaemonProcess) -> dict[str, Any]:
        addresses = {}
        for (role, port), (key, scheme) in ADDRESS_KEYS.items():
            if port in node.ready.get("roles", {}).get(role, {}):
                addresses[key] = f"{scheme}://{node.address(role, port)}"
        if "peer" in node.ready:
            addresses["peer"] = f"tcp://{node.ready['peer']}"
        return {"name": node.name, "pid": node.process.pid if node.process else None,
                "running": node.process is not None and node.process.poll() is None, "roles": list(node.roles),
                "addresses": addresses, "data_dir": str(node.data_dir), "argv": node.argv, "cwd": os.getcwd(),
                "restarts": self.restarts.get(node.name, 0)}

    def write_cluster_json(self) -> None:
        """Write cluster.json (whole, by a rename: a reader never sees half of it)."""
        path = self.data_dir / CLUSTER_JSON
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(temp, path)


def run_ha_devcluster(data_dir: str | None, *, tls: bool = False, upstreams: Sequence[str] = (),
                      herd: Sequence[str] = (), agents: Sequence[str] = (), second_cluster: bool = False) -> int:
    """Run the HA devcluster in the foreground until Ctrl-C or SIGTERM; returns the exit status.
    ``herd`` settings go to every node of the HA cluster but the agents, ``agents`` to both agents;
    ``second_cluster`` adds the replica cluster."""
    setup_logging()
    try:
        if tls:
            raise ValueError("--tls is not available with --ha yet")
        upstream_overrides(upstreams)
        check_settings("--set-herd", herd)
        check_settings("--set-agents", agents)
        RedisServer.executable()
        PostgresServer(Path("."), POSTGRES)  # finds PostgreSQL's programs
    except (ValueError, ConfigError) as bad:
        print(f"swarmreg devcluster: {bad}", file=sys.stderr)
        return 2
    except ServerError as missing:
        print(f"swarmreg devcluster --ha: {missing}", file=sys.stderr)
        return 1
    return run_in_data_dir(data_dir, lambda root: HaDevcluster(root, upstreams, herd, agents, second_cluster).run(),
                           (DaemonStartError, ServerError))
