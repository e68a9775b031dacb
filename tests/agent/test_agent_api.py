"""The agent's blob API: local hits, swarm downloads streamed while they arrive, and failures."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.digest import Digest
from tests.conftest import RunningDaemon, blob_files, free_port, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error, blob_path, digest_of, upload_blob

NS = "library/pulled"


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *overrides: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(tmp_path / "herd", *overrides), ["origin", "tracker"])


async def start_agent(nursery: trio.Nursery, tmp_path: Path, herd: RunningDaemon | str, name: str = "agent",
                      *overrides: str) -> RunningDaemon:
    tracker = herd if isinstance(herd, str) else herd.ready["roles"]["tracker"]["ws"]
    config = make_config(tmp_path / name, f"agent.tracker={tracker}", *overrides)
    return await start_daemon(nursery, config, ["agent"])


async def upload(herd: RunningDaemon, data: bytes) -> str:
    async with httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as client:
        return await upload_blob(client, NS, data, chunk=8 << 20)


async def test_a_blob_comes_through_the_swarm_and_then_from_disk(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(6 << 20)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        head = await client.head(blob_path(NS, digest))
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        response = await client.get(blob_path(NS, digest))
        assert response.status_code == 200 and response.content == data
        assert response.headers["docker-content-digest"] == digest
        # The verified blob moves into the store just after the last byte is released.
        with trio.fail_after(10):
            while blob_files(Path(agent.config.data_dir)) != {digest.removeprefix("sha256:"): len(data)}:
                await trio.sleep(0.05)
        # Served from the store now, ranges included.
        ranged = await client.get(blob_path(NS, digest), headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
        stats = (await client.get("/stats")).json()
        assert stats["totals"]["downloaded"] >= len(data)
        [torrent] = stats["torrents"]
        assert torrent["complete"] and torrent["pieces_done"] == torrent["pieces"]


async def test_ranges_of_a_blob_still_arriving(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(3 << 20, seed=1)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(blob_path(NS, digest), headers={"Range": "bytes=1000000-2000000"})
        assert response.status_code == 206 and response.content == data[1_000_000:2_000_001]


async def test_the_stream_starts_before_the_blob_is_complete(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The origin sends at 4 MiB/s: a 24 MiB blob takes about 6 s to arrive.
    herd = await start_herd(nursery, tmp_path, "swarm.upload_rate_limit=4MiB")
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(24 << 20, seed=2)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        hasher, pieces_when_first_bytes = hashlib.sha256(), None
        async with client.stream("GET", blob_path(NS, digest)) as response:
            async for chunk in response.aiter_bytes():
                if pieces_when_first_bytes is None:
                    [torrent] = (await client.get("/stats")).json()["torrents"]
                    pieces_when_first_bytes = (torrent["pieces_done"], torrent["pieces"])
                hasher.update(chunk)
        assert "sha256:" + hasher.hexdigest() == digest
    done, total = pieces_when_first_bytes
    assert done < total, "bytes flowed while pieces were still missing"


async def test_concurrent_requests_share_one_download(nursery: trio.Nursery, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(4 << 20, seed=3)
    digest = await upload(herd, data)
    caplog.set_level(logging.INFO, logger="swarmreg.agent")
    bodies = []
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        async def get() -> None:
            bodies.append((await client.get(blob_path(NS, digest))).content)

        async with trio.open_nursery() as requests:
            for _ in range(6):
                requests.start_soon(get)
    assert bodies == [data] * 6
    assert len([r for r in caplog.records if r.getMessage().startswith("downloaded ")]) == 1


async def test_unknown_blob_is_404(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert_error(await client.get(blob_path(NS, digest_of(b"nobody has this"))), 404, "BLOB_UNKNOWN")
        assert (await client.head(blob_path(NS, digest_of(b"nobody has this")))).status_code == 404
        assert_error(await client.get("/namespace/ns/blobs/sha256:nope"), 400, "DIGEST_INVALID")


async def test_the_empty_blob_needs_no_swarm(nursery: trio.Nursery, tmp_path: Path) -> None:
    agent = await start_agent(nursery, tmp_path, "127.0.0.1:9")  # no tracker at all
    async with httpx.AsyncClient(base_url=agent.url("agent")) as client:
        response = await client.get(blob_path(NS, digest_of(b"")))
        assert response.status_code == 200 and response.content == b""


async def test_tracker_unreachable_is_503(nursery: trio.Nursery, tmp_path: Path) -> None:
    agent = await start_agent(nursery, tmp_path, "127.0.0.1:9", "agent", "agent.tracker_attempts=2")
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(blob_path(NS, digest_of(b"anything")))
        assert_error(response, 503, "UNAVAILABLE")
        assert "tracker" in response.json()["errors"][0]["message"]
        assert (await client.get("/health")).status_code == 200


async def test_origin_unreachable_is_502(nursery: trio.Nursery, tmp_path: Path) -> None:
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", "tracker.origins=['127.0.0.1:9']"),
                                 ["tracker"])
    agent = await start_agent(nursery, tmp_path, tracker)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(blob_path(NS, digest_of(b"anything")))
        assert_error(response, 502, "BAD_GATEWAY")
        # The answer names the service that failed, not its address (that is logged).
        message = response.json()["errors"][0]["message"]
        assert "origin unreachable" in message and "127.0.0.1:9" not in message


async def test_a_restarted_agent_seeds_what_it_holds(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    first = await start_agent(nursery, tmp_path, herd, "first")
    data = random_bytes(2 << 20, seed=4)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(first.url("agent") + blob_path(NS, digest))).content == data
        await first.stop()
        again = await start_agent(nursery, tmp_path, herd, "first")
        [torrent] = (await client.get(again.url("agent") + "/stats")).json()["torrents"]
        assert torrent["complete"] and torrent["digest"] == digest
        assert Digest.parse(digest)


async def test_an_origin_that_lost_a_blob_fetches_it_again_and_seeds(nursery: trio.Nursery,
                                                                     tmp_path: Path) -> None:
    origin_dir, port = tmp_path / "origin", free_port()
    origin_args = (f"origin.listen=127.0.0.1:{port}",)
    origin = await start_daemon(nursery, make_config(origin_dir, *origin_args), ["origin"])
    tracker = await start_daemon(nursery, make_config(
        tmp_path / "tracker", f"tracker.origins=['127.0.0.1:{port}']", "tracker.metainfo_refresh=0.1"),
        ["tracker"])
    data = random_bytes(2 << 20, seed=5)
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        digest = await upload_blob(client, NS, data, through=True)
    first = await start_agent(nursery, tmp_path, tracker, "first")
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(first.url("agent") + blob_path(NS, digest))).content == data
        await first.stop()
        # The origin comes back without its local copy (a lost disk); the tracker still knows the blob.
        await origin.stop()
        hex_ = digest.removeprefix("sha256:")
        (origin_dir / "blobs/sha256" / hex_[:2] / hex_).unlink()
        origin = await start_daemon(nursery, make_config(origin_dir, *origin_args), ["origin"])
        second = await start_agent(nursery, tmp_path, tracker, "second")
        assert (await client.get(second.url("agent") + blob_path(NS, digest))).content == data
    assert blob_files(origin_dir) == {hex_: len(data)}, "the origin fetched it back from its backend"


async def test_a_small_blob_comes_inline_without_a_torrent(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd)
    data = random_bytes(20_000, seed=6)
    digest = await upload(herd, data)
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert (await client.get(blob_path(NS, digest))).content == data
        stats = (await client.get("/stats")).json()
    assert stats["torrents"] == [], "the tracker's metainfo reply carried the bytes"
    assert stats["inline"] == {"blobs": {digest: len(data)}, "bytes": len(data)}
    assert blob_files(Path(agent.config.data_dir)) == {digest.removeprefix("sha256:"): len(data)}


async def test_an_agent_pulls_more_blobs_than_it_has_peer_connections(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Each blob is a torrent with its own peer connection. A finished one must let its idle
    # connection go: kept, they filled connections_limit and stalled every later download.
    herd = await start_herd(nursery, tmp_path, "swarm.connections_limit=3", "swarm.idle_peer_timeout=1")
    agent = await start_agent(nursery, tmp_path, herd, "agent", "swarm.connections_limit=3",
                              "swarm.idle_peer_timeout=1", "agent.stall_timeout=20")
    blobs = [random_bytes((1 << 20) + 4096, seed=100 + i) for i in range(6)]  # above inline_max: torrents
    digests = [await upload(herd, data) for data in blobs]
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        for data, digest in zip(blobs, digests, strict=True):
            response = await client.get(blob_path(NS, digest))
            assert response.status_code == 200 and response.content == data, response.text[:200]
        assert (await client.get("/stats")).json()["totals"]["torrents"] == len(blobs)


async def test_a_download_that_fails_before_its_first_byte_is_an_error_not_a_cut_200(nursery: trio.Nursery,
                                                                                    tmp_path: Path) -> None:
    origin = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    tracker = await start_daemon(nursery, make_config(
        tmp_path / "tracker", f"tracker.origins=['{origin.ready['roles']['origin']['http']}']"), ["tracker"])
    async with httpx.AsyncClient(base_url=origin.url("origin"), timeout=60) as client:
        digest = await upload_blob(client, NS, random_bytes(3 << 20, seed=7), chunk=8 << 20)
    agent = await start_agent(nursery, tmp_path, tracker, "agent", "agent.stall_timeout=2")
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert (await client.head(blob_path(NS, digest))).status_code == 200  # metainfo known and cached
        await origin.stop()  # the only seed is gone: no piece will ever come
        response = await client.get(blob_path(NS, digest))
        assert_error(response, 503, "UNAVAILABLE")
        assert "no piece arrived" in response.json()["errors"][0]["message"]


async def test_idle_torrents_leave_the_session_and_come_back_on_demand(nursery: trio.Nursery,
                                                                      tmp_path: Path) -> None:
    # Idle after a second (peers drop after one); the tracker asks the origin again after half a second.
    idle = ("swarm.idle_torrent_timeout=1", "swarm.idle_peer_timeout=1")
    herd = await start_herd(nursery, tmp_path, *idle, "tracker.metainfo_refresh=0.5")
    first = await start_agent(nursery, tmp_path, herd, "first", *idle)
    data = random_bytes(6 << 20, seed=11)
    digest = await upload(herd, data)

    async def torrents(daemon: RunningDaemon, role: str) -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            return [t["digest"] for t in (await client.get(daemon.url(role) + "/stats")).json()["torrents"]]

    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(first.url("agent") + blob_path(NS, digest))).content == data
        assert await torrents(first, "agent") == [digest]
        with trio.fail_after(20):
            while await torrents(first, "agent") or await torrents(herd, "origin"):
                await trio.sleep(0.2)
        assert blob_files(Path(first.config.data_dir)) == {digest.removeprefix("sha256:"): len(data)}
        # Pulled again from the first agent's store: it seeds the blob again.
        assert (await client.get(first.url("agent") + blob_path(NS, digest))).content == data
        with trio.fail_after(10):
            while await torrents(first, "agent") != [digest]:
                await trio.sleep(0.1)
        # A new agent gets it through the swarm: the origin seeds it again when the tracker asks.
        second = await start_agent(nursery, tmp_path, herd, "second", *idle)
        with trio.fail_after(30):
            assert (await client.get(second.url("agent") + blob_path(NS, digest))).content == data
        assert await torrents(herd, "origin") == [digest]
