"""A ring of three origins sharing one S3 backend (origin processes, moto's server): a blob
pushed through the proxy is in the bucket at its commit; with every owner of it SIGKILLed, a
pull through an agent (and one through the proxy) still gets it, byte-identical, from the bucket
through the origin left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from tests.cluster.helpers import members_option
from tests.conftest import blob_files, free_port, make_config, random_bytes, start_daemon
from tests.origin.helpers import blob_path
from tests.origin.test_s3_and_http_backends import key, s3_backend
from tests.proxy.helpers import push_blob
from tests.servers.s3 import ADMIN_KEYS, MotoServer

NS = "test/s3-ring"


async def test_a_blob_whose_owners_are_all_dead_still_comes_from_s3(
        spawn: Any, nursery: trio.Nursery, tmp_path: Path, moto_server: MotoServer, s3_bucket: str) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(3)]
    ring = (members_option(members), "origin.replicas=2", "cluster.health_interval=0.2")
    origins = {member: await spawn(f"origin{n}", ["origin"], f"origin.listen={member}", *ring,
                                   s3_backend(moto_server, s3_bucket), data_dir=tmp_path / f"origin{n}")
               for n, member in enumerate(members)}
    for origin in origins.values():  # the S3 keys went to a 0600 file, not onto the command line
        assert origin.process is not None
        cmdline = Path(f"/proc/{origin.process.pid}/cmdline").read_bytes().decode()
        assert ADMIN_KEYS["aws_secret_access_key"] not in cmdline and "options.bucket" not in cmdline
    proxy = await start_daemon(nursery, make_config(tmp_path / "proxy", *ring), ["proxy", "index"])
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", *ring), ["tracker"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={tracker.ready['roles']['tracker']['ws']}"), ["agent"])

    data = random_bytes(6 << 20, seed=7)  # past tracker.inline_max: a torrent, seeded by an origin
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=60) as client:
        digest = await push_blob(client, NS, data)
    assert moto_server.keys(s3_bucket) == {key(digest): len(data)}, "written through at the commit"
    *owners, survivor = rank(digest, members)
    for owner in owners:
        origins[owner].kill()
        await origins[owner].wait()
    assert digest.split(":")[1] not in blob_files(tmp_path / f"origin{members.index(survivor)}")

    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
            pulled = await client.get(blob_path(NS, digest))
    assert pulled.status_code == 200, pulled.text
    assert pulled.content == data
    assert digest.split(":")[1] in blob_files(tmp_path / f"origin{members.index(survivor)}"), \
        "the origin left fetched it from the bucket"
    async with httpx.AsyncClient(base_url=proxy.url("proxy"), timeout=60) as client:
        assert (await client.get(f"/v2/{NS}/blobs/{digest}")).content == data
