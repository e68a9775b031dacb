"""The agent's cache limits with real daemons: max_size holds while pulling, pinned blobs stay,
disk pressure on a small filesystem, the local admin, and the tracker hearing an evicted blob left."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from swarmreg.agent.cache import footprint
from swarmreg.config import Address
from swarmreg.tracker.client import Announcement, TrackerClient
from tests.agent.test_agent_api import NS, start_agent, start_herd, upload
from tests.conftest import RunningDaemon, blob_files, random_bytes
from tests.origin.helpers import assert_error, blob_path, digest_of, tmpfs

MiB = 1 << 20


def data_size(root: Path) -> int:
    """The bytes of every file under a data directory (blobs, downloads, tmp, metainfo)."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # moved or evicted meanwhile
                pass
    return total


class Sampler:
    """Measures something every few milliseconds while it runs; keeps the largest value."""

    def __init__(self, measure: Any) -> None:
        self.measure = measure
        self.largest = 0.0
        self.samples = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.largest = max(self.largest, await trio.to_thread.run_sync(self.measure))
            self.samples += 1
            await trio.sleep(0.005)


async def stats(agent: RunningDaemon) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        cache: dict[str, Any] = (await client.get(agent.url("agent") + "/stats")).json()["cache"]
        return cache


async def pull(client: httpx.AsyncClient, agent: RunningDaemon, digest: str) -> bytes:
    response = await client.get(agent.url("agent") + blob_path(NS, digest))
    assert response.status_code == 200, response.text
    return response.content


async def test_max_size_holds_while_pulling_three_times_the_limit(tmp_path: Path) -> None:
    # The data directory has a tmpfs of its own: statvfs measures all of it at one instant (a
    # directory walk races the renames and evictions it measures, counting a file twice).
    limit = 24 * MiB
    with tmpfs(tmp_path / "disk", "128m") as disk:
        async with trio.open_nursery() as nursery:
            herd = await start_herd(nursery, tmp_path)
            agent = await start_agent(nursery, disk, herd, "agent", f"agent.cache.max_size={limit}")
            await pull_three_times_the_limit(herd, agent, disk, limit)
            await agent.stop()
            await herd.stop()


def used_bytes(disk: Path) -> int:
    stat = os.statvfs(disk)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


async def pull_three_times_the_limit(herd: RunningDaemon, agent: RunningDaemon, disk: Path, limit: int) -> None:
    blobs = [random_bytes(6 * MiB, seed=seed) for seed in range(12)]  # 72 MiB: three times the limit
    digests = [await upload(herd, data) for data in blobs]
    baseline = used_bytes(disk)  # the empty data directory (and the filesystem's own)
    sampler = Sampler(lambda: used_bytes(disk) - baseline)
    async with httpx.AsyncClient(timeout=60) as client:
        async with trio.open_nursery() as sampling:
            await sampling.start(sampler.run)
            for group in range(0, 12, 3):  # three at once: the pulls race to make room
                async with trio.open_nursery() as pulls:
                    for index in range(group, group + 3):
                        async def one(index: int = index) -> None:
                            assert await pull(client, agent, digests[index]) == blobs[index]
                        pulls.start_soon(one)
            sampling.cancel_scope.cancel()
        assert sampler.samples > 20 and sampler.largest > limit / 2, (sampler.samples, sampler.largest)
        assert sampler.largest <= limit, f"the data directory reached {sampler.largest} bytes"
        cache = await stats(agent)
        assert cache["evicted"]["reasons"]["max_size"]["count"] >= 8, cache
        assert cache["used"] <= limit
        assert digests[0].removeprefix("sha256:") not in blob_files(Path(agent.config.data_dir))
        # The first blob comes back through the swarm (the agent holds it no more), byte-identical.
        assert digests[0] in [e["digest"] for e in cache["recent"]]
        assert await pull(client, agent, digests[0]) == blobs[0]
        assert digests[0].removeprefix("sha256:") in blob_files(Path(agent.config.data_dir))
    assert data_size(Path(agent.config.data_dir)) <= limit


async def test_a_blob_larger_than_max_size_is_a_clear_error_and_evicts_nothing(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent", "agent.cache.max_size=8MiB")
    small, big = random_bytes(3 * MiB, seed=1), random_bytes(9 * MiB, seed=2)
    small_digest, big_digest = await upload(herd, small), await upload(herd, big)
    async with httpx.AsyncClient(timeout=60) as client:
        assert await pull(client, agent, small_digest) == small
        response = await client.get(agent.url("agent") + blob_path(NS, big_digest))
        assert_error(response, 507, "STORAGE_FULL")
        assert "max_size" in response.json()["errors"][0]["message"]
        assert (await stats(agent))["evicted"]["count"] == 0
        assert await pull(client, agent, small_digest) == small


async def test_a_blob_being_read_is_not_evicted_and_its_read_completes(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Room for one 32 MiB blob and a bit: pulling another must wait for the first's reader.
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent", "agent.cache.max_size=40MiB")
    first, second = random_bytes(32 * MiB, seed=3), random_bytes(16 * MiB, seed=4)
    first_digest, second_digest = await upload(herd, first), await upload(herd, second)
    base = agent.url("agent")
    async with httpx.AsyncClient(timeout=60) as client:
        assert await pull(client, agent, first_digest) == first  # held now
        hasher = hashlib.sha256()
        async with client.stream("GET", base + blob_path(NS, first_digest)) as reading:
            chunks = reading.aiter_raw(1 << 16)
            hasher.update(await chunks.__anext__())  # the server is blocked on a full socket: pinned
            assert_error(await client.delete(f"{base}/cmd/evict", params={"digest": first_digest}), 409, "BLOB_IN_USE")
            listed = (await client.get(f"{base}/cmd/blob/list", headers={"Accept": "application/json"})).json()
            assert [(b["digest"], b["pinned"]) for b in listed["blobs"]] == [(first_digest, True)]
            second_pulled: list[bytes] = []
            async with trio.open_nursery() as waiting:
                async def pull_second() -> None:
                    second_pulled.append(await pull(client, agent, second_digest))
                waiting.start_soon(pull_second)
                # The second pull waits for room; the first blob is not evicted under its reader.
                with trio.move_on_after(1):
                    await trio.sleep_forever()
                assert not second_pulled
                assert first_digest.removeprefix("sha256:") in blob_files(Path(agent.config.data_dir))
                async for chunk in chunks:
                    hasher.update(chunk)
        assert "sha256:" + hasher.hexdigest() == first_digest
        assert second_pulled == [second]
        cache = await stats(agent)
        assert [(e["digest"], e["reason"]) for e in cache["recent"]] == [(first_digest, "max_size")]


async def test_the_tracker_hears_an_evicted_blob_left(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent")
    data = random_bytes(4 * MiB, seed=5)
    digest = await upload(herd, data)
    base = agent.url("agent")
    async with httpx.AsyncClient(timeout=60) as client:
        assert await pull(client, agent, digest) == data
        [torrent] = (await client.get(base + "/stats")).json()["torrents"]
        agent_port = Address.parse(agent.ready["peer"]).port
        tracker = TrackerClient(Address.parse(herd.ready["roles"]["tracker"]["ws"]), port=lambda: 1,
                                peer_id="b" * 20, announcements=list, on_peers=lambda *_: None)
        stop = trio.Event()
        await nursery.start(tracker.run, stop)
        asking = Announcement(torrent["info_hash"], digest, NS, False)

        async def agent_listed() -> bool:
            return agent_port in [peer.port for peer in await tracker.announce(asking)]

        with trio.fail_after(10):
            while not await agent_listed():  # the agent's complete announce lands after its download
                await trio.sleep(0.05)
        evicted = await client.delete(f"{base}/cmd/evict", params={"digest": digest})
        assert evicted.status_code == 200 and evicted.text == f"evicted {digest} ({len(data)} bytes)\n"
        with trio.fail_after(10):
            while await agent_listed():  # the leave is one websocket frame behind the answer
                await trio.sleep(0.05)
        assert (await client.get(base + "/stats")).json()["torrents"] == []
        assert blob_files(Path(agent.config.data_dir)) == {}
        assert not list((Path(agent.config.data_dir) / "metainfo").iterdir())
        assert await pull(client, agent, digest) == data  # back through the swarm
        stop.set()


async def test_the_admin_api_lists_and_evicts(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent")
    blobs = [random_bytes(2 * MiB, seed=seed) for seed in (6, 7)]
    digests = [await upload(herd, data) for data in blobs]
    base = agent.url("agent")
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for digest, data in zip(digests, blobs, strict=True):
            assert await pull(client, agent, digest) == data
        text = (await client.get("/cmd/blob/list")).text.splitlines()
        assert text[0].split() == ["DIGEST", "SIZE", "LAST_READ", "HELD_SINCE", "PINNED"]
        assert [line.split()[0] for line in text[1:]] == digests  # least recently read first
        assert all(line.split()[1] == str(2 * MiB) and line.split()[4] == "no" for line in text[1:])
        [only] = (await client.get("/cmd/blob/list", params={"substr": digests[1][10:30]},
                                   headers={"Accept": "application/json"})).json()["blobs"]
        assert only["digest"] == digests[1] and only["size"] == 2 * MiB and only["pinned"] is False
        assert only["held_since"] <= only["last_read"]
        evicted = await client.delete("/cmd/evict", params={"digest": digests[0]},
                                      headers={"Accept": "application/json"})
        assert evicted.json() == {"digest": digests[0], "size": 2 * MiB, "reason": "admin"}
        assert_error(await client.delete("/cmd/evict", params={"digest": digests[0]}), 404, "BLOB_UNKNOWN")
        assert_error(await client.delete("/cmd/evict", params={"digest": digest_of(b"never")}), 404, "BLOB_UNKNOWN")
        assert_error(await client.delete("/cmd/evict", params={"digest": "sha256:nope"}), 400, "DIGEST_INVALID")
        assert_error(await client.delete("/cmd/evict"), 400, "BAD_REQUEST")
        cache = (await client.get("/stats")).json()["cache"]
        assert cache["evicted"] == {"count": 1, "bytes": 2 * MiB, "reasons": {"admin": {"count": 1, "bytes": 2 * MiB}}}
        assert cache["held"] == 1 and cache["used"] == footprint(2 * MiB)


def outward_address() -> str:
    """An address of this host that is not loopback (that of its default route), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        except OSError as error:
            pytest.skip(f"no non-loopback IPv4 route: {error}")
        host: str = probe.getsockname()[0]
    if host.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return host


@pytest.mark.parametrize("remote", [False, True])
async def test_the_admin_api_refuses_other_hosts_unless_allowed(nursery: trio.Nursery, tmp_path: Path,
                                                                 remote: bool) -> None:
    host = outward_address()
    agent = await start_agent(nursery, tmp_path, "127.0.0.1:9", "agent", f"agent.listen={host}:0",
                              "cluster.insecure=true", f"agent.cache.admin_remote={'true' if remote else 'false'}")
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=30) as client:
        listing = await client.get("/cmd/blob/list")
        evicting = await client.delete("/cmd/evict", params={"digest": digest_of(b"x")})
        blob = await client.get(blob_path(NS, digest_of(b"")))
    assert blob.status_code == 200  # the blob API itself is for every host
    if remote:
        assert listing.status_code == 200 and listing.text.split() == ["DIGEST", "SIZE", "LAST_READ", "HELD_SINCE",
                                                                      "PINNED"]
        assert_error(evicting, 404, "BLOB_UNKNOWN")
    else:
        assert_error(listing, 403, "DENIED")
        assert_error(evicting, 403, "DENIED")
        assert host not in listing.text


async def test_disk_pressure_on_a_small_filesystem_evicts_down_to_disk_low(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64m") as disk:
        async with trio.open_nursery() as nursery:
            herd = await start_herd(nursery, tmp_path)
            agent = await start_agent(nursery, disk, herd, "agent",
                                      "agent.cache.disk_high=0.5", "agent.cache.disk_low=0.3")

            def used() -> float:
                stat = os.statvfs(disk)
                return (stat.f_blocks - stat.f_bfree) / stat.f_blocks

            blobs = [random_bytes(8 * MiB, seed=seed) for seed in range(10, 16)]  # 48 MiB on 64
            digests = [await upload(herd, data) for data in blobs]
            sampler = Sampler(used)
            async with httpx.AsyncClient(timeout=60) as client:
                async with trio.open_nursery() as sampling:
                    await sampling.start(sampler.run)
                    for digest, data in zip(digests, blobs, strict=True):
                        assert await pull(client, agent, digest) == data
                    sampling.cancel_scope.cancel()
                assert 0.3 < sampler.largest <= 0.5, sampler.largest
                cache = await stats(agent)
                assert cache["evicted"]["reasons"]["disk_high"]["count"] >= 2, cache
                assert used() <= 0.5
                assert await pull(client, agent, digests[0]) == blobs[0]
            await agent.stop()
            await herd.stop()


async def test_an_evict_while_the_blob_downloads_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, "swarm.upload_rate_limit=4MiB")  # about 4 s for 16 MiB
    agent = await start_agent(nursery, tmp_path, herd, "agent", "agent.cache.max_size=64MiB")
    data = random_bytes(16 * MiB, seed=20)
    digest = await upload(herd, data)
    base = agent.url("agent")
    async with httpx.AsyncClient(timeout=60) as client:
        hasher = hashlib.sha256()
        async with client.stream("GET", base + blob_path(NS, digest)) as response:
            chunks = response.aiter_raw()
            hasher.update(await chunks.__anext__())
            assert_error(await client.delete(f"{base}/cmd/evict", params={"digest": digest}), 409, "BLOB_IN_USE")
            async for chunk in chunks:
                hasher.update(chunk)
        assert "sha256:" + hasher.hexdigest() == digest
        with trio.fail_after(10):  # the reader's pin goes with its response
            while (await client.delete(f"{base}/cmd/evict", params={"digest": digest})).status_code == 409:
                await trio.sleep(0.05)
        assert blob_files(Path(agent.config.data_dir)) == {}


async def test_a_restarted_agent_over_its_new_limit_evicts_before_it_seeds(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    agent = await start_agent(nursery, tmp_path, herd, "agent")
    blobs = [random_bytes(6 * MiB, seed=seed) for seed in (21, 22, 23)]
    digests = [await upload(herd, data) for data in blobs]
    async with httpx.AsyncClient(timeout=60) as client:
        for digest, data in zip(digests, blobs, strict=True):
            assert await pull(client, agent, digest) == data
        await agent.stop()
        agent = await start_agent(nursery, tmp_path, herd, "agent", "agent.cache.max_size=14MiB")
        assert data_size(Path(agent.config.data_dir)) <= 14 * MiB
        kept = {digest.removeprefix("sha256:") for digest in digests[1:]}
        assert set(blob_files(Path(agent.config.data_dir))) == kept  # the least recently read went
        torrents = (await client.get(agent.url("agent") + "/stats")).json()["torrents"]
        assert sorted(t["digest"] for t in torrents) == sorted(digests[1:])
        assert await pull(client, agent, digests[0]) == blobs[0]  # back, evicting the next oldest
        assert data_size(Path(agent.config.data_dir)) <= 14 * MiB
