"""What only the Redis store does: trackers writing at once, a full Redis, lapsing claims, its bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from swarmreg.errors import PEER_ID_TAKEN, UNAVAILABLE, SwarmregError
from swarmreg.tracker.redis_store import RedisStore
from swarmreg.tracker.wire import Peer
from tests.servers.redis import RedisServer

IH = "ab" * 32


def peer(n: int) -> Peer:
    return Peer(f"{n:020x}", "10.0.0.1", 1000 + n)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one Redis: two trackers."""
    first, second = (RedisStore(redis_server.url, ttl=60, max_peers=500) for _ in range(2))
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_trackers_announcing_at_once_lose_nothing(stores: tuple[RedisStore, RedisStore]) -> None:
    async def announce(n: int) -> None:
        await stores[n % 2].announce(IH, peer(n), owner=f"c:{n % 2}:{n}")

    async def claim(store: RedisStore, n: int, won: list[int]) -> None:
        try:
            await store.announce(IH, peer(1000), owner=f"c:x:{n}")
            won.append(n)
        except SwarmregError as error:
            assert error.code is PEER_ID_TAKEN

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(announce, n)
    assert await stores[0].count() == 200
    assert len(await stores[1].peers_for(IH)) == 200
    # One peer id announced through both at once: exactly one connection gets it.
    won: list[int] = []
    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(claim, stores[n % 2], n, won)
    assert len(won) == 1 and await stores[0].holder(peer(1000).peer_id) == f"c:x:{won[0]}"


async def test_a_full_redis_fails_announces_and_changes_nothing(stores: tuple[RedisStore, RedisStore]) -> None:
    store = stores[0]
    await store.announce(IH, peer(1), owner="c:a:1")
    await trio.to_thread.run_sync(store.client.config_set, "maxmemory", "1")  # noeviction: writes fail
    try:
        with pytest.raises(SwarmregError) as error:
            await store.announce(IH, peer(2), owner="c:a:2")
        assert error.value.code is UNAVAILABLE
        assert [p.peer_id for p in await store.peers_for(IH)] == [peer(1).peer_id], "reads still work"
    finally:
        await trio.to_thread.run_sync(store.client.config_set, "maxmemory", "0")
    await store.announce(IH, peer(2), owner="c:a:2")
    assert await store.count() == 2


async def test_a_claim_lapses_a_ttl_after_its_last_announce(stores: tuple[RedisStore, RedisStore]) -> None:
    """A killed tracker never drops its connections: their peer ids must not stay taken for good."""
    store = stores[0]
    await store.announce(IH, peer(1), owner="c:a:1")
    for key in (f"{store.prefix}claim:{peer(1).peer_id}", f"{store.prefix}id:c:a:1"):
        ttl_ms = await trio.to_thread.run_sync(store.client.pttl, key)
        assert 0 < ttl_ms <= 60_000


async def test_the_bus_skips_what_is_not_an_event_and_survives_it(stores: tuple[RedisStore, RedisStore]) -> None:
    heard: list[dict[str, Any]] = []
    arrived = trio.Event()

    def deliver(event: dict[str, Any]) -> None:
        heard.append(event)
        arrived.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(stores[0].listen, deliver)
        for junk in ("not json", "[1, 2]"):
            await trio.to_thread.run_sync(stores[1].client.publish, stores[1].channel, junk)
        await stores[1].publish({"kind": "push"})
        with trio.fail_after(10):
            await arrived.wait()
        nursery.cancel_scope.cancel()
    assert heard == [{"kind": "push"}]


async def test_listening_starts_with_redis_down(redis_server: RedisServer) -> None:
    """A tracker starts while Redis is down: its subscriber reports started, and retries."""
    redis_server.kill()
    store = RedisStore(redis_server.url, ttl=60, max_peers=50)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(store.listen, lambda event: None)
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
