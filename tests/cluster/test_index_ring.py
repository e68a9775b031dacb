"""A proxy and an agent with a ring of two indexes (real daemons, ``[cluster] indexes``): both use
the ring's first live index, and the next one when it stops."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from swarmreg.cluster.rendezvous import rank
from swarmreg.config import Address
from swarmreg.index.wire import tags_path
from tests.conftest import make_config, random_bytes, start_daemon
from tests.proxy.helpers import push_image

REPO = "test/indexes"


async def test_the_proxy_moves_to_the_next_index_when_the_first_stops(nursery: trio.Nursery, tmp_path: Path) -> None:
    indexes = {}
    for n in range(2):
        index = await start_daemon(nursery, make_config(tmp_path / f"index{n}"), ["index"])
        indexes[Address.parse(index.ready["roles"]["index"]["http"])] = index
    first, second = rank("", list(indexes))
    members = ", ".join(f"'{address}'" for address in indexes)
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", f"cluster.indexes=[{members}]"),
                              ["origin", "proxy"])
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30) as client:
        await push_image(client, REPO, "one", [random_bytes(1000, seed=1)])
        assert (await client.get(f"/v2/{REPO}/tags/list")).json()["tags"] == ["one"]
        for address, holds in ((first, True), (second, False)):
            async with httpx.AsyncClient(base_url=f"http://{address}") as direct:
                assert (await direct.get(tags_path(REPO))).is_success is holds, "the first index took it"
        await indexes[first].stop()
        _, manifest = await push_image(client, REPO, "two", [random_bytes(1000, seed=2)])
        pulled = await client.get(f"/v2/{REPO}/manifests/two")
        assert pulled.status_code == 200 and pulled.content == manifest
