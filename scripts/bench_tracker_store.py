#!/usr/bin/env python3
"""What an announce costs the tracker's peer store: in memory, and in Redis (issue 15, item 4).

Starts a redis-server (Debian's) on 127.0.0.1 in a temp dir, then, for each store and each swarm
size, times announces of the swarm's peers one after another (re-announces: the steady state),
and then the same announces made by ``--concurrency`` tasks at once against one torrent (the
optimistic transactions of the Redis store conflict and retry there). Reports the median and p95
in microseconds and the announces per second. Run from the repository root:
``.venv/bin/python scripts/bench_tracker_store.py [--rounds 3] [--concurrency 16] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swarmreg.tracker.peers import PeerStore  # noqa: E402
from swarmreg.tracker.redis_store import RedisStore  # noqa: E402
from swarmreg.tracker.store import MemoryStore, Store  # noqa: E402
from swarmreg.tracker.wire import Peer  # noqa: E402
from tests.servers.redis import RedisServer  # noqa: E402

IH = "ab" * 32


async def measure(store: Store, size: int, rounds: int, concurrency: int) -> dict[str, Any]:
    peers = [Peer(f"{n:020x}", "10.0.0.1", 1000 + n % 60000) for n in range(size)]
    for n, peer in enumerate(peers):
        await store.announce(IH, peer, owner=f"c:bench:{n}")
    times: list[float] = []
    for _ in range(rounds):
        for n, peer in enumerate(peers):
            start = time.perf_counter()
            await store.announce(IH, peer, owner=f"c:bench:{n}", progress=1)
            times.append(time.perf_counter() - start)
    queue = list(enumerate(peers)) * rounds

    async def worker() -> None:
        while queue:
            n, peer = queue.pop()
            await store.announce(IH, peer, owner=f"c:bench:{n}", progress=2)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    concurrent = size * rounds / (time.perf_counter() - start)
    for n in range(size):
        await store.drop_owner(f"c:bench:{n}")
    times.sort()
    return {"swarm": size, "median_us": round(statistics.median(times) * 1e6),
            "p95_us": round(times[int(0.95 * len(times))] * 1e6),
            "sequential_per_s": round(len(times) / sum(times)), "concurrent_per_s": round(concurrent)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            for size in map(int, args.sizes.split(",")):
                memory = MemoryStore(PeerStore(ttl=90, max_peers=50))
                results["memory"].append(await measure(memory, size, args.rounds, args.concurrency))
                redis = RedisStore(server.url, ttl=90, max_peers=50)
                results["redis"].append(await measure(redis, size, args.rounds, args.concurrency))
                await redis.aclose()
        finally:
            server.kill()
    for kind, rows in results.items():
        for row in rows:
            print(kind, row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    trio.run(main)
