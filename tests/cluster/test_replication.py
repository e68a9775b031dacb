"""Origins replicate (real daemons, ``[cluster] origins``): a blob committed at one goes to its
other owners in the background, through a queue that survives a restart; reads then find it
with its first owner stopped; an origin that misses a blob fetches it from another; and a ring
that grows moves only the blobs whose owners changed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tracker.wire import TO_PEER, Announce, AnnounceReply, MetainfoReply, MetainfoRequest, PeersPush, decode
from tests.cluster.helpers import holds, members_option
from tests.conftest import RunningDaemon, blob_files, free_port, make_config, random_bytes, start_daemon
from tests.origin.helpers import blob_path, upload_blob
from tests.proxy.helpers import digest_of, push_blob
from tests.tracker.test_tracker_service import channel, me, request

NS = "test/replicas"


async def start_origin(nursery: trio.Nursery, tmp_path: Path, address: Address, members: list[Address],
                       *overrides: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(
        tmp_path / f"origin{address.port}", f"origin.listen={address}", members_option(members),
        "cluster.health_interval=0.2", *overrides), ["origin"])


def queued(origin: RunningDaemon) -> list[str]:
    return sorted(p.name for p in (Path(origin.config.data_dir) / "replication").glob("sha256-*"))


async def test_a_push_reaches_every_owner_and_survives_its_first_owner(nursery: trio.Nursery, tmp_path: Path) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(3)]
    origins = {m: await start_origin(nursery, tmp_path, m, members, "origin.replicas=2") for m in members}
    proxy = await start_daemon(nursery, make_config(tmp_path / "proxy", members_option(members), "origin.replicas=2"),
                               ["proxy", "index"])
    data = random_bytes(300_000, seed=3)
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=30) as client:
        digest = await push_blob(client, NS, data)
        first, second, other = rank(digest, members)
        await holds(origins[second], digest)
        with trio.fail_after(20):
            while queued(origins[first]):
                await trio.sleep(0.05)
        assert digest.split(":")[1] not in blob_files(Path(origins[other].config.data_dir)), "not an owner"
        await origins[first].stop()
        pulled = await client.get(f"/v2/{NS}/blobs/{digest}")
        assert pulled.status_code == 200 and pulled.content == data


async def test_the_obligation_survives_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    a = await start_origin(nursery, tmp_path, members[0], members)
    data = random_bytes(200_000, seed=4)
    async with httpx.AsyncClient(base_url=f"http://{members[0]}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)  # the other origin is not running
    assert queued(a) == [f"sha256-{digest.split(':')[1]}"]
    await a.stop()
    assert queued(a), "still owed after the stop"
    b = await start_origin(nursery, tmp_path, members[1], members)
    a = await start_origin(nursery, tmp_path, members[0], members)
    await holds(b, digest)
    with trio.fail_after(20):
        while queued(a):
            await trio.sleep(0.05)
    assert not queued(b), "a replica is not sent on"


async def test_an_origin_that_misses_a_blob_fetches_it_from_another(nursery: trio.Nursery, tmp_path: Path) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    # One replica: each blob stays at the origin it was uploaded to (its owner or not).
    await start_origin(nursery, tmp_path, members[0], members, "origin.replicas=1")
    b = await start_origin(nursery, tmp_path, members[1], members, "origin.replicas=1")
    data = next(d for d in (random_bytes(500_000, seed=10 + n) for n in range(20))
                if rank(digest_of(d), members)[0] == members[0])
    async with httpx.AsyncClient(base_url=f"http://{members[0]}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)
    assert digest.split(":")[1] not in blob_files(Path(b.config.data_dir))
    async with httpx.AsyncClient(base_url=f"http://{members[1]}", timeout=30) as client:
        assert (await client.get(blob_path(NS, digest), params={"local": "true"})).status_code == 404
        pulled = await client.get(blob_path(NS, digest))
        assert pulled.status_code == 200 and pulled.content == data
    await holds(b, digest)


async def test_a_grown_ring_moves_only_the_blobs_whose_owners_changed(nursery: trio.Nursery, tmp_path: Path) -> None:
    a_address, b_address = Address("127.0.0.1", free_port()), Address("127.0.0.1", free_port())
    a = await start_origin(nursery, tmp_path, a_address, [a_address], "origin.replicas=1")
    blobs = [random_bytes(20_000, seed=30 + n) for n in range(12)]
    async with httpx.AsyncClient(base_url=f"http://{a_address}", timeout=30) as client:
        digests = [await upload_blob(client, NS, data) for data in blobs]
    with trio.fail_after(20):  # the metainfo (and with it the blob's namespace) is built after the commit
        while len(list((Path(a.config.data_dir) / "metainfo").rglob("*.namespace"))) < len(digests):
            await trio.sleep(0.05)
    await a.stop()
    grown = [a_address, b_address]
    b = await start_origin(nursery, tmp_path, b_address, grown, "origin.replicas=1")
    a = await start_origin(nursery, tmp_path, a_address, grown, "origin.replicas=1")
    moving = {d.split(":")[1] for d in digests if rank(d, grown)[0] == b_address}
    assert 0 < len(moving) < len(digests)
    with trio.fail_after(20):
        while queued(a) or set(blob_files(Path(b.config.data_dir))) != moving:
            await trio.sleep(0.05)


async def test_an_origin_killed_after_a_commit_still_owes_the_blob(spawn: Any, tmp_path: Path) -> None:
    """SIGKILL right after the commit's answer: the obligation was on disk before it."""
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    options = (members_option(members), "cluster.health_interval=0.2")
    a = await spawn("a", ["origin"], f"origin.listen={members[0]}", *options, data_dir=tmp_path / "a")
    data = random_bytes(100_000, seed=5)
    async with httpx.AsyncClient(base_url=f"http://{members[0]}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)  # the other origin is not running
    a.kill()
    await a.wait()
    assert (tmp_path / "a" / "replication" / f"sha256-{digest.split(':')[1]}").exists()
    await spawn("b", ["origin"], f"origin.listen={members[1]}", *options, data_dir=tmp_path / "b")
    await spawn("a", ["origin"], f"origin.listen={members[0]}", *options, data_dir=tmp_path / "a")
    with trio.fail_after(30):
        while digest.split(":")[1] not in blob_files(tmp_path / "b"):
            await trio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"http://{members[1]}", timeout=30) as client:
        assert (await client.get(blob_path(NS, digest), params={"local": "true"})).content == data


async def test_agents_pull_through_the_next_owner_when_the_first_is_stopped(nursery: trio.Nursery,
                                                                              tmp_path: Path) -> None:
    """The tracker asks the blob's origins in ring order for its metainfo: with the first owner
    stopped, the second one answers and seeds, and the agent's download completes."""
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    origins = {m: await start_origin(nursery, tmp_path, m, members) for m in members}
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", members_option(members)), ["tracker"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={tracker.ready['roles']['tracker']['ws']}"), ["agent"])
    data = random_bytes(3 << 20, seed=6)  # past tracker.inline_max: a torrent, seeded by an origin
    first = rank(digest_of(data), members)[0]
    async with httpx.AsyncClient(base_url=f"http://{first}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)
    second = next(m for m in members if m != first)
    await holds(origins[second], digest)
    await origins[first].stop()
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        pulled = await client.get(blob_path(NS, digest))
        assert pulled.status_code == 200 and pulled.content == data


async def test_a_download_whose_origin_died_gets_the_next_owner(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The tracker recorded the first owner as the torrent's origin (a pull before); that origin
    stopped: the next download stalls on it, and the tracker asks the origins again, which
    brings in the second owner (it waited out its stall timeout and failed before)."""
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    origins = {m: await start_origin(nursery, tmp_path, m, members) for m in members}
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", members_option(members),
                                                      "tracker.stall_after=1"), ["tracker"])
    data = random_bytes(3 << 20, seed=7)  # past tracker.inline_max: a torrent, seeded by an origin
    first = rank(digest_of(data), members)[0]
    async with httpx.AsyncClient(base_url=f"http://{first}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)
    await holds(origins[next(m for m in members if m != first)], digest)
    for name in ("before", "after"):
        agent = await start_daemon(nursery, make_config(
            tmp_path / name, f"agent.tracker={tracker.ready['roles']['tracker']['ws']}", "agent.stall_timeout=20"),
            ["agent"])
        async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
            with trio.fail_after(15):
                pulled = await client.get(blob_path(NS, digest))
            assert pulled.status_code == 200 and pulled.content == data
        await agent.stop()  # it would seed the blob to the next one
        if name == "before":
            await origins[first].stop()


async def test_every_owner_holding_a_blob_seeds_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The tracker records the blob's other owners as its seeders too (an agent then has another
    origin when one dies), but not an origin that does not own it."""
    members = [Address("127.0.0.1", free_port()) for _ in range(3)]
    origins = {m: await start_origin(nursery, tmp_path, m, members, "origin.replicas=2") for m in members}
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", members_option(members),
                                                      "origin.replicas=2"), ["tracker"])
    data = random_bytes(3 << 20, seed=8)  # past tracker.inline_max: a torrent
    owners = rank(digest_of(data), members)[:2]
    async with httpx.AsyncClient(base_url=f"http://{owners[0]}", timeout=30) as client:
        digest = await upload_blob(client, NS, data)
    await holds(origins[owners[1]], digest)
    async with channel(tracker) as ws:
        reply = await request(ws, MetainfoRequest(1, NS, digest))
        assert isinstance(reply, MetainfoReply) and reply.metainfo is not None
        info_hash = Metainfo.parse(reply.metainfo, Digest.parse(digest)).info_hash
        answer = await request(ws, Announce(2, info_hash, digest, NS, me(1)))
        seeders = set()
        with trio.fail_after(10):  # in the reply, or pushed once the tracker heard of it
            while True:
                assert isinstance(answer, AnnounceReply | PeersPush), answer
                assert not isinstance(answer, AnnounceReply) or answer.failure is None
                seeders |= {f"{p.host}:{p.port}" for p in answer.peers if p.origin}
                if len(seeders) >= 2:
                    break
                answer = decode(await ws.get_message(), TO_PEER, 16 << 20)
    assert seeders == {origins[m].ready["peer"] for m in owners}


async def test_a_member_that_comes_back_empty_gets_its_blobs_again(nursery: trio.Nursery, tmp_path: Path) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    await start_origin(nursery, tmp_path, members[0], members)
    b = await start_origin(nursery, tmp_path, members[1], members)
    async with httpx.AsyncClient(base_url=f"http://{members[0]}", timeout=30) as client:
        digests = [await upload_blob(client, NS, random_bytes(30_000, seed=40 + n)) for n in range(3)]
    for digest in digests:
        await holds(b, digest)
    await b.stop()
    shutil.rmtree(b.config.data_dir)  # its disk was replaced
    b = await start_origin(nursery, tmp_path, members[1], members)
    for digest in digests:
        await holds(b, digest)
