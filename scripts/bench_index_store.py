#!/usr/bin/env python3
"""Roughly what one index request costs in the store, by way of reaching PostgreSQL.

One at a time, ``--requests`` times each, on a PostgreSQL server of its own (as the tests start
it: tests/servers/postgres.py) over 127.0.0.1:

1. ``threads``: PostgresIndexStore.get_tag as the index calls it, from Trio: a worker thread
   (trio.to_thread.run_sync), BEGIN REPEATABLE READ READ ONLY, the SELECT, COMMIT;
2. ``async``: the same three statements through psycopg's AsyncConnection under asyncio (its
   async API needs asyncio's loop: under Trio it would need trio-asyncio as a bridge);
3. ``sync``: the same statements on a blocking connection in the calling thread (the floor);
4. ``sqlite``: SqliteIndexStore.get_tag from Trio, for scale.

Prints the median and 95th percentile per request, in microseconds (``--json`` writes them).
Run from the repository root: ``.venv/bin/python scripts/bench_index_store.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swarmreg.digest import Digest  # noqa: E402
from swarmreg.index.postgres_store import PostgresIndexStore  # noqa: E402
from swarmreg.index.sqlite_store import SqliteIndexStore  # noqa: E402
from swarmreg.index.store import IndexStore  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402

QUERY = "SELECT digest FROM tags WHERE repository = %s AND tag = %s"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"median_us": round(statistics.median(times) * 1e6, 1),
            "p95_us": round(times[int(len(times) * 0.95)] * 1e6, 1)}


async def fill(store: IndexStore) -> None:
    digest = Digest.of(b"bench")
    await store.put_manifest("bench/app", digest, media_type=MANIFEST, size=1)
    await store.put_tag("bench/app", "v1", digest)


async def timed_store(store: IndexStore, requests: int) -> list[float]:
    times = []
    async with store:
        await fill(store)
        for _ in range(requests):
            start = time.perf_counter()
            await store.get_tag("bench/app", "v1")
            times.append(time.perf_counter() - start)
    return times


def timed_sync(url: str, requests: int) -> list[float]:
    times = []
    with psycopg.connect(url, autocommit=True) as connection:
        for _ in range(requests):
            start = time.perf_counter()
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            connection.execute(QUERY, ("bench/app", "v1")).fetchone()
            connection.execute("COMMIT")
            times.append(time.perf_counter() - start)
    return times


async def timed_async(url: str, requests: int) -> list[float]:
    times = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        for _ in range(requests):
            start = time.perf_counter()
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await (await connection.execute(QUERY, ("bench/app", "v1"))).fetchone()
            await connection.execute("COMMIT")
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    server = PostgresServer()
    results: dict[str, dict[str, float]] = {}
    try:
        server.start()
        url = server.create_database()
        with tempfile.TemporaryDirectory() as spool:
            results["threads"] = summary(trio.run(timed_store, PostgresIndexStore(url, spool_dir=spool),
                                                  args.requests))
            results["async"] = summary(asyncio.run(timed_async(url, args.requests)))
            results["sync"] = summary(timed_sync(url, args.requests))
            results["sqlite"] = summary(trio.run(timed_store, SqliteIndexStore(Path(spool) / "index.db"),
                                                 args.requests))
    finally:
        server.close()
    for name, numbers in results.items():
        print(f"{name:8} median {numbers['median_us']:8.1f} us   p95 {numbers['p95_us']:8.1f} us")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
