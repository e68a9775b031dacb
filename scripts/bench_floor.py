"""The CPU floor of a netsim scenario: what moving its bytes costs with no swarm at all.

``python scripts/bench_floor.py configs/netsim/swarm30.toml [--json out.json]``

The scenario's network is built as ``netsim run`` builds it (one namespace per node, the same
veths, htb caps and MTU). Then every agent receives the blob from the agent before it in a ring,
over one TCP connection through both nodes' caps, and writes it to disk, while it sends its own
copy to the next one from disk with ``sendfile``: each delivered byte is sent once, received once,
written once and read once, as in a swarm that sends no byte twice, but with no peer wire, no
hashing and no Python per piece. The nodes' user and system time over the bytes received is the
floor of ``cpu.daemons_s_per_gib``, and the run's time, against the ring's T* (blob / agent_up),
says what the caps alone allow. Compare with the scenario's ``netsim run`` on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

from netsim.cpu import machine_busy, process_seconds
from netsim.network import Network, unavailable
from netsim.scenario import load_scenario

PORT = 17000
GIB = 1 << 30
CHUNK = 1 << 20


def node(listen: str, peer: str, source: Path, sink: Path, size: int) -> None:
    """One ring node: receive ``size`` bytes into ``sink`` while sending ``source`` to ``peer``."""
    server = socket.create_server((listen, PORT))

    def receive() -> None:
        connection, _ = server.accept()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        got = 0
        with connection, open(sink, "wb", buffering=0) as out:
            while got < size:
                n = connection.recv_into(buffer)
                if not n:
                    raise SystemExit(f"short stream: {got} of {size} bytes")
                out.write(view[:n])
                got += n

    receiver = threading.Thread(target=receive)
    receiver.start()
    print("listening", flush=True)
    sys.stdin.readline()  # every node listens: go
    with socket.create_connection((peer, PORT)) as connection, open(source, "rb") as blob:
        connection.sendfile(blob)
    receiver.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime + usage.ru_stime, flush=True)


async def bench(scenario_path: Path) -> dict[str, float]:
    """Build the network, run the ring once, and return its figures."""
    scenario = load_scenario(scenario_path)
    links = scenario.links
    size = scenario.size
    network = Network()
    work = Path(tempfile.mkdtemp(prefix="floor-"))
    try:
        await network.create()
        hosts = []
        for i in range(scenario.agents):
            host = await network.add(f"agent-{i}", links.mtu)
            await network.shape(host, up=links.agent_up, down=links.agent_down)
            hosts.append(host)
        for i in range(len(hosts)):
            with open(work / f"source-{i}", "wb") as out:
                for _ in range(0, size, CHUNK):
                    out.write(os.urandom(min(CHUNK, size)))
        processes = []
        for i, host in enumerate(hosts):
            peer = hosts[(i + 1) % len(hosts)]
            argv = [*host.wrapper, sys.executable, __file__, "--node", host.address, peer.address,
                    str(work / f"source-{i}"), str(work / f"sink-{i}"), str(size)]
            processes.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "listening\n"
        busy0, total0 = machine_busy()
        cpu0 = sum(process_seconds(p.pid) for p in processes)
        start = time.monotonic()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("\n")
            process.stdin.flush()
        outputs = [await trio.to_thread.run_sync(process.communicate) for process in processes]
        wall = time.monotonic() - start
        busy1, total1 = machine_busy()
        if any(p.returncode for p in processes):
            raise SystemExit("a ring node failed")
        delivered = size * len(processes)
        # Each node reports its own user + system time as it ends (it is gone before we could read it).
        nodes_s = sum(float(out.split()[-1]) for out, _ in outputs) - cpu0
        cores = os.cpu_count() or 1
        return {"agents": len(processes), "bytes_delivered": delivered, "wall_s": wall,
                "vs_bound": wall / (size / links.agent_up), "nodes_s": nodes_s,
                "nodes_s_per_gib": nodes_s / (delivered / GIB),
                "machine_busy": (busy1 - busy0) / (total1 - total0),
                "machine_s_per_gib": (busy1 - busy0) / (total1 - total0) * wall * cores / (delivered / GIB)}
    finally:
        await network.destroy()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        listen, peer, source, sink, size = sys.argv[2:7]
        node(listen, peer, Path(source), Path(sink), int(size))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if refusal := unavailable():
        print(f"bench_floor: netns mode is unavailable here: {refusal}", file=sys.stderr)
        return 2
    figures = trio.run(bench, args.scenario)
    print(f"{args.scenario.stem} floor: {figures['agents']} agents, {figures['wall_s']:.1f} s "
          f"({figures['vs_bound']:.2f}x the ring's bound), nodes {figures['nodes_s']:.1f} core-s = "
          f"{figures['nodes_s_per_gib']:.1f} core-s/GiB, machine {figures['machine_busy']:.0%} busy = "
          f"{figures['machine_s_per_gib']:.1f} core-s/GiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
