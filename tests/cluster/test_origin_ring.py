"""A proxy in front of a ring of three origins (real daemons, ``[cluster] origins``, one replica):
each blob is stored at its first live owner, however it is pushed (a chunked push's session
origin replicates it there); with that owner stopped, a push goes to the next one, and reads
find it there. The ring may also be a DNS name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from tests.cluster.helpers import holds, members_option
from tests.conftest import RunningDaemon, blob_files, free_port, make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_blob, push_image

REPO = "test/ring"


@attrs.define
class Herd:
    origins: dict[Address, RunningDaemon]
    proxy: RunningDaemon
    client: httpx.AsyncClient

    def first_owner(self, digest: str, among: list[Address] | None = None) -> Address:
        return rank(digest, among or list(self.origins))[0]

    def holders(self, digest: str) -> set[Address]:
        hex_ = digest.split(":")[1]
        return {address for address, origin in self.origins.items()
                if hex_ in blob_files(Path(origin.config.data_dir))}


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *overrides: str, origins: int = 3) -> Herd:
    members = [Address("127.0.0.1", free_port()) for _ in range(origins)]
    ring = (members_option(members), "origin.replicas=1", *overrides)
    running = {member: await start_daemon(nursery, make_config(
        tmp_path / f"origin{member.port}", f"origin.listen={member}", *ring), ["origin"]) for member in members}
    proxy = await start_daemon(nursery, make_config(tmp_path / "proxy", *ring), ["proxy", "index"])
    return Herd(running, proxy, httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=30))


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Herd]:
    herd = await start_herd(nursery, tmp_path)
    async with herd.client:
        yield herd


async def push_chunked(client: httpx.AsyncClient, data: bytes) -> str:
    """POST, two PATCHes and the PUT with the digest: a docker push of one layer."""
    digest = digest_of(data)
    started = await client.post(f"/v2/{REPO}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    half = len(data) // 2
    for start, end in ((0, half), (half, len(data))):
        patched = await client.patch(location, content=data[start:end],
                                     headers={"Content-Range": f"{start}-{end - 1}"})
        assert patched.status_code == 202, patched.text
        location = patched.headers["location"]
    finished = await client.put(location, params={"digest": digest})
    assert finished.status_code == 201, finished.text
    return digest


async def test_each_blob_is_stored_at_its_first_owner(herd: Herd) -> None:
    monolithic = [await push_blob(herd.client, REPO, random_bytes(50_000, seed=n)) for n in range(3)]
    for digest in monolithic:
        assert herd.holders(digest) == {herd.first_owner(digest)}, "monolithic pushes go straight there"
    # The sessions of chunked pushes open at any origin (the digest comes at the end), which
    # replicates the blob to its owner. Six of them: one lands off its owner with odds 1 - (1/3)^6.
    chunked = [await push_chunked(herd.client, random_bytes(70_000, seed=10 + n)) for n in range(6)]
    for digest in chunked:
        await holds(herd.origins[herd.first_owner(digest)], digest)
    for n, digest in enumerate(chunked):
        pulled = await herd.client.get(f"/v2/{REPO}/blobs/{digest}")
        assert pulled.status_code == 200 and pulled.content == random_bytes(70_000, seed=10 + n)


async def test_with_its_owner_stopped_a_push_goes_to_the_next_live_owner(herd: Herd) -> None:
    dead = next(iter(herd.origins))
    await herd.origins[dead].stop()
    # Blobs whose first owner is the stopped origin.
    blobs = [data for data in (random_bytes(30_000, seed=100 + n) for n in range(60))
             if herd.first_owner(digest_of(data)) == dead][:6]
    assert len(blobs) == 6
    alive = [address for address in herd.origins if address != dead]
    monolithic = await push_blob(herd.client, REPO, blobs[0])
    assert herd.holders(monolithic) == {herd.first_owner(monolithic, alive)}
    # Four sessions at either live origin: each blob still goes to its next owner.
    pushed = [(await push_chunked(herd.client, data), data) for data in blobs[1:5]]
    for chunked, _ in pushed:
        await holds(herd.origins[herd.first_owner(chunked, alive)], chunked)
    manifest_digest, manifest = await push_image(herd.client, REPO, "after", [blobs[5]])
    for digest, data in [(monolithic, blobs[0]), *pushed]:
        pulled = await herd.client.get(f"/v2/{REPO}/blobs/{digest}")
        assert pulled.status_code == 200 and pulled.content == data
    pulled = await herd.client.get(f"/v2/{REPO}/manifests/after")
    assert pulled.status_code == 200 and pulled.content == manifest
    assert pulled.headers["docker-content-digest"] == manifest_digest


async def test_the_ring_may_be_a_dns_name(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``localhost:<port>`` resolves (for real) to 127.0.0.1, where one origin listens."""
    origin = await start_daemon(nursery, make_config(tmp_path / "origin"), ["origin"])
    port = Address.parse(origin.ready["roles"]["origin"]["http"]).port
    proxy = await start_daemon(nursery, make_config(tmp_path / "proxy", f"cluster.origins=localhost:{port}"),
                               ["proxy", "index"])
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=30) as client:
        data = random_bytes(20_000, seed=7)
        digest = await push_blob(client, REPO, data)
        assert digest.split(":")[1] in blob_files(tmp_path / "origin")
        pulled = await client.get(f"/v2/{REPO}/blobs/{digest}")
        assert pulled.status_code == 200 and pulled.content == data


async def test_a_session_id_names_its_origin_and_a_forged_one_reaches_none(herd: Herd) -> None:
    started = await herd.client.post(f"/v2/{REPO}/blobs/uploads/")
    uid = started.headers["docker-upload-uuid"]
    session, _, tag = uid.partition(".")
    assert len(tag) == 8
    for forged in (session, f"{session}.ffffffff", f"{session}.{tag}.{tag}", f"0{session}.{tag}"):
        answer = await herd.client.patch(f"/v2/{REPO}/blobs/uploads/{forged}", content=b"x")
        assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", forged
    assert (await herd.client.patch(f"/v2/{REPO}/blobs/uploads/{uid}", content=b"x")).status_code == 202
