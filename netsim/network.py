"""A simulated network: one Linux network namespace per node, veth pairs on a bridge, tc shaping.

Each node gets namespace ``netsim-<pid>-<node>`` with ``eth0`` at its own address on a /16 whose
second octet comes from the runner's pid (so two runs never share one). The other end of each
veth sits on bridge ``nsbr<pid>`` in the runner's namespace, which holds the ``.0.1`` address:
netsim itself talks to every node over the bridge.

Shaping is an htb class on each side of a node's veth: ``eth0``'s egress is the node's upload,
the bridge side's egress its download. Traffic between a node and netsim itself (pulls, /stats)
goes through an uncapped class, because a client on the host (``docker pull localhost:16000``)
does not cross the host's network link. The kernel here has no netem, so links have no delay.

Everything is named after the runner's pid; ``sweep`` removes what a run whose process is gone
left behind (including its processes), and ``Network.destroy`` removes a run's own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

NETNS_DIR = Path("/run/netns")
# The kernel's ARP table is one for every namespace, with limits sized for one host: 60 nodes
# that each talk to 60 others need 3,600 entries against a hard limit of 1,024 (gc_thresh3), and
# past it no new entry is made. In swarm60 every agent's dials to its peers timed out, three
# times each, until libtorrent wrote them all off ("neighbor table overflow!" in dmesg): the
# starved agents were this, not the swarm. These limits hold 250 nodes in full view of each other.
NEIGHBOUR_LIMITS = {"gc_thresh1": 65536, "gc_thresh2": 131072, "gc_thresh3": 262144}
NEIGHBOUR_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")
NAMESPACE = re.compile(r"^netsim-(\d+)-")
LINK = re.compile(r"^ns(?:br(?P<bridge>\d+)|(?P<veth>\d+)v\d+)$")
UNCAPPED = "10gbit"


class NetworkError(Exception):
    """The namespaces, links or shaping could not be set up."""


@attrs.frozen
class Host:
    """One node's place on the network."""

    name: str
    namespace: str
    address: str
    veth: str  # the bridge side of its pair

    @property
    def wrapper(self) -> tuple[str, ...]:
        """The argv prefix that runs a command inside the node's namespace."""
        return ("ip", "netns", "exec", self.namespace)


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"netsim-{os.getpid()}-probe"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        return f"ip netns add failed: {detail.decode(errors='replace').strip() or error}"
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True, timeout=10)
    return None


async def ip(*argv: str) -> None:
    """Run one iproute2 command; NetworkError carries its complaint."""
    result = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace').strip()}")


async def _iptables_restore(host: Host, rules: str) -> None:
    """Replace the filter table of the node's namespace with ``rules``."""
    if shutil.which("iptables-restore") is None:
        raise NetworkError("a refuse fault needs iptables (the Debian package iptables)")
    result = await trio.run_process([*host.wrapper, "iptables-restore"], stdin=rules.encode(),
                                    capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"iptables-restore in {host.namespace}: {result.stderr.decode(errors='replace').strip()}")


def make_room_for_neighbours() -> None:
    """Raise the kernel's neighbour-table limits to NEIGHBOUR_LIMITS where they are lower. Never
    lowered again: another run may be using them."""
    for name, wanted in NEIGHBOUR_LIMITS.items():
        path = NEIGHBOUR_SYSCTL / name
        try:
            if int(path.read_text()) < wanted:
                path.write_text(str(wanted))
        except (OSError, ValueError) as error:
            raise NetworkError(f"cannot raise net.ipv4.neigh.default.{name} to {wanted}: {error}") from None


class Network:
    """The namespaces, veths and bridge of one run."""

    def __init__(self, owner: int | None = None) -> None:
        self.owner = os.getpid() if owner is None else owner
        self.bridge = f"nsbr{self.owner}"
        self.prefix = f"10.{64 + self.owner % 128}"
        self.gateway = f"{self.prefix}.0.1"
        self.hosts: dict[str, Host] = {}

    async def create(self) -> None:
        """The bridge, with netsim's own address on it."""
        make_room_for_neighbours()
        await ip("ip", "link", "add", self.bridge, "type", "bridge")
        await ip("ip", "addr", "add", f"{self.gateway}/16", "dev", self.bridge)
        await ip("ip", "link", "set", self.bridge, "up")

    async def add(self, name: str, mtu: int = 1500) -> Host:
        """A namespace for node ``name``, wired to the bridge by a link of ``mtu`` bytes."""
        index = len(self.hosts) + 2
        host = Host(name, f"netsim-{self.owner}-{name}", f"{self.prefix}.{index // 250}.{index % 250 + 2}",
                    f"ns{self.owner}v{index}")
        self.hosts[name] = host
        await ip("ip", "netns", "add", host.namespace)
        await ip("ip", "link", "add", host.veth, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
                 "mtu", str(mtu), "netns", host.namespace)
        await ip("ip", "link", "set", host.veth, "master", self.bridge, "up")
        await ip("ip", "-n", host.namespace, "addr", "add", f"{host.address}/16", "dev", "eth0")
        await ip("ip", "-n", host.namespace, "link", "set", "eth0", "up")
        await ip("ip", "-n", host.namespace, "link", "set", "lo", "up")
        return host

    async def shape(self, host: Host, *, up: int, down: int) -> None:
        """Cap the node's upload and download (bytes per second; 0 leaves a direction uncapped)."""
        if up:
            await self._htb(("ip", "netns", "exec", host.namespace), "eth0", up, "dst")
        if down:
            await self._htb((), host.veth, down, "src")

    async def _htb(self, inside: Sequence[str], device: str, rate: int, direction: str) -> None:
        """The cap on one direction: class 1:1 at ``rate``, shared by 1:30 (small packets first)
        and 1:10 (the rest); 1:20, outside the cap, carries netsim's own traffic."""
        tc = (*inside, "tc")
        # Burst: a tenth of a second of the rate, at least a few full-size (GSO) segments.
        burst = str(max(rate // 10, 256 * 1024))
        cap = ("burst", burst, "cburst", burst, "quantum", "60000")
        await ip(*tc, "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "10")
        await ip(*tc, "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb",
                 "rate", f"{rate}bps", "ceil", f"{rate}bps", *cap)
        await ip(*tc, "class", "add", "dev", device, "parent", "1:1", "classid", "1:10", "htb",
                 "rate", f"{rate * 9 // 10}bps", "ceil", f"{rate}bps", "prio", "1", *cap)
        await ip(*tc, "class", "add", "dev", device, "parent", "1:1", "classid", "1:30", "htb",
                 "rate", f"{rate // 10}bps", "ceil", f"{rate}bps", "prio", "0", *cap)
        # Short queues under the cap: htb's default leaf queue (1000 packets) holds seconds of
        # traffic at these rates. And a full uplink dropped handshakes behind bulk data: 60
        # agents dialling each other saw most connects time out, and starved agents wrote
        # their peers off. Real hosts run fq_codel, which sends sparse flows first; this kernel
        # has no fq_codel or sfq, so packets under 128 bytes (handshakes, ACKs, HAVEs,
        # requests) and ARP get their own class ahead of the bulk, each with a ~0.1 s byte FIFO.
        limit = str(max(rate // 10, 128 * 1024))
        for leaf in ("10", "30"):
            await ip(*tc, "qdisc", "add", "dev", device, "parent", f"1:{leaf}", "handle", f"{leaf}:",
                     "bfifo", "limit", limit)
        await ip(*tc, "class", "add", "dev", device, "parent", "1:", "classid", "1:20", "htb",
                 "rate", UNCAPPED, "quantum", "60000")
        await ip(*tc, "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", direction, f"{self.gateway}/32", "flowid", "1:20")
        await ip(*tc, "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", "2", "u32",
                 "match", "u16", "0x0000", "0xff80", "at", "2", "flowid", "1:30")
        # ARP too: a reply dropped behind bulk data left the asker unable to reach that peer at all.
        await ip(*tc, "filter", "add", "dev", device, "parent", "1:", "protocol", "arp", "prio", "3", "u32",
                 "match", "u32", "0", "0", "flowid", "1:30")

    async def refuse(self, host: Host, port: int, peers: Sequence[tuple[str, int]]) -> None:
        """Reset every connection to the node's peer-wire ``port`` and its dials to ``peers``
        (netsim's own traffic, the tracker and the origins' HTTP APIs still pass)."""
        rules = ["*filter", f"-A INPUT -p tcp --syn --dport {port} -j REJECT --reject-with tcp-reset"]
        rules += [f"-A OUTPUT -p tcp --syn -d {peer_host} --dport {peer_port} -j REJECT --reject-with tcp-reset"
                  for peer_host, peer_port in peers]
        await _iptables_restore(host, "\n".join([*rules, "COMMIT", ""]))

    async def accept(self, host: Host) -> None:
        """Take the node's refusal away."""
        await _iptables_restore(host, "*filter\nCOMMIT\n")

    async def destroy(self) -> None:
        """Kill what still runs in the run's namespaces, then remove them and the bridge."""
        await remove(self.owner)
        self.hosts.clear()


async def remove(owner: int) -> None:
    """Everything run ``owner`` made: its namespaces (their processes killed first), veths and
    bridge. The veths go explicitly: a deleted namespace takes its pairs with it only later."""
    for namespace in _namespaces(owner):
        result = await trio.run_process(["ip", "netns", "pids", namespace], capture_stdout=True,
                                        capture_stderr=True, check=False)
        for pid in result.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
    for link in _links(owner):
        await trio.run_process(["ip", "link", "del", link], capture_stderr=True, check=False)
    for namespace in _namespaces(owner):
        await trio.run_process(["ip", "netns", "del", namespace], capture_stderr=True, check=False)


def _namespaces(owner: int | None = None) -> list[str]:
    try:
        names = [entry.name for entry in NETNS_DIR.iterdir()]
    except OSError:
        return []
    return [name for name in names
            if (match := NAMESPACE.match(name)) and (owner is None or int(match.group(1)) == owner)]


def _links(owner: int | None = None) -> list[str]:
    """The bridges and bridge-side veths of run ``owner`` (None: of every run)."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return []
    return [name for name in names
            if (match := LINK.match(name)) and (owner is None or _owner(match) == owner)]


def _owner(match: re.Match[str]) -> int:
    return int(match.group(1) or match.group(2))


async def sweep(*, everything: bool = False) -> list[int]:
    """Remove what runs whose process is gone left behind (``everything``: every run's).
    Returns the owners cleaned up."""
    owners = {_owner(match) for name in _namespaces() + _links()
              if (match := NAMESPACE.match(name) or LINK.match(name))}
    stale = sorted(owner for owner in owners if everything or not _alive(owner))
    for owner in stale:
        await remove(owner)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
