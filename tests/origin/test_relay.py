"""The origin streams a blob it fetches from an upstream while the bytes still arrive (issue 12,
point 2): a blob GET gets its first bytes before the upstream sent its last, the last byte only
once the blob matched its digest, and a broken upstream body cuts every such response (never a
whole body of wrong bytes), stores nothing and is fetched again by the next request. And
``metainfo?wait=false`` offers the first ``origin.relay_limit`` askers that stream (202)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.origin.wire import BLOB_SIZE, RELAY_PENDING, blob_path
from swarmreg.swarm.metainfo import build_metainfo
from tests.conftest import blob_files, random_bytes
from tests.origin.test_upstream_fetch import get_or_cut, nothing_kept, origin_for
from tests.upstream.lying import LyingUpstream

MiB = 1 << 20


def upstream_gets(upstream: LyingUpstream) -> int:
    return [method for method, target in upstream.requests if target.endswith(str(upstream.digest))].count("GET")


async def test_a_blob_get_streams_while_the_upstream_still_sends(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = random_bytes(4 * MiB + 17, seed=31)
    slow = LyingUpstream(data, "slow", seconds=4.0)
    await nursery.start(slow.serve)
    upstream = f"127.0.0.1:{slow.port}"
    path = blob_path(f"{upstream}/x/y", slow.digest)
    async with origin_for(nursery, tmp_path, upstream) as (origin, client):
        sent_at_first_chunk = None
        body = bytearray()
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(data))
            async for chunk in response.aiter_raw():
                if sent_at_first_chunk is None:
                    sent_at_first_chunk = slow.sent
                body += chunk
        assert sent_at_first_chunk is not None and sent_at_first_chunk < len(data), \
            "the first bytes came before the upstream had sent the whole blob"
        assert bytes(body) == data
        # Held and seeded now, from the one upstream GET.
        assert blob_files(Path(origin.config.data_dir)) == {slow.digest.hex: len(data)}
        assert (await client.get(path)).content == data
        assert upstream_gets(slow) == 1


async def pull(client: httpx.AsyncClient, path: str, outcomes: list[httpx.Response | int]) -> None:
    outcomes.append(await get_or_cut(client, path))


@pytest.mark.parametrize("mode", ["wrong", "short"])
async def test_a_broken_upstream_body_cuts_the_streams_and_is_never_kept(nursery: trio.Nursery, tmp_path: Path,
                                                                        mode: str) -> None:
    data = random_bytes(3 * MiB + 5, seed=32)
    lying = LyingUpstream(data, mode, seconds=2.0)
    await nursery.start(lying.serve)
    upstream = f"127.0.0.1:{lying.port}"
    path = blob_path(f"{upstream}/x/y", lying.digest)
    async with origin_for(nursery, tmp_path, upstream) as (origin, client):
        for attempt in (1, 2):  # the second request fetches again: nothing of the first was kept
            outcomes: list[httpx.Response | int] = []
            async with trio.open_nursery() as pulling:  # two clients streaming the same fetch
                for _ in range(2):
                    pulling.start_soon(pull, client, path, outcomes)
            for outcome in outcomes:
                assert isinstance(outcome, int), "a 200 whose body was cut, not an error answer"
                assert 0 < outcome < len(data), outcome
            nothing_kept(origin, lying.digest)
            assert upstream_gets(lying) == attempt
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("limit", [2, 0])
async def test_metainfo_without_waiting_offers_a_relay_to_the_first_askers(nursery: trio.Nursery, tmp_path: Path,
                                                                         limit: int) -> None:
    data = random_bytes(2 * MiB + 3, seed=33)
    slow = LyingUpstream(data, "slow", seconds=3.0)
    await nursery.start(slow.serve)
    upstream = f"127.0.0.1:{slow.port}"
    path = blob_path(f"{upstream}/x/y", slow.digest, "/metainfo")
    async with origin_for(nursery, tmp_path, upstream,
                          f"origin.relay_limit={limit}") as (origin, client):
        for _ in range(limit):
            response = await client.get(path, params={"wait": "false"})
            assert response.status_code == RELAY_PENDING, response.text
            assert response.headers[BLOB_SIZE] == str(len(data))
            assert slow.sent < len(data), "answered while the upstream still sends"
        # Past the limit: the answer waits for the blob and its torrent.
        response = await client.get(path, params={"wait": "false"})
        assert response.status_code == 200, response.text
        assert slow.sent == len(data)
        assert response.content == build_metainfo(Path(origin.config.data_dir, "blobs", "sha256",
                                                        slow.digest.hex[:2], slow.digest.hex), slow.digest).raw
        # Held: the metainfo at once, without waiting or not.
        for params in ({"wait": "false"}, {}):
            again = await client.get(path, params=params)
            assert again.status_code == 200 and again.content == response.content
        assert upstream_gets(slow) == 1
