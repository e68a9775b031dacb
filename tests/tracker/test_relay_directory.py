"""The tracker's relay asks (OriginDirectory.metainfo_or_relay): one origin request each, whose
metainfo answer is cached and its origin recorded as a seeder as a plain metainfo fetch does,
and the asks for one blob take turns, so those past the origin's relay limit cost no request."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import trio
import trio.testing

from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.origin.client import OriginMetainfo, Pending
from swarmreg.swarm.metainfo import build_metainfo
from swarmreg.tracker.origins import KnownBlob, OriginDirectory, RelayOffer
from swarmreg.tracker.peers import PeerStore
from swarmreg.tracker.store import MemoryStore
from tests.conftest import random_bytes

NS = "127.0.0.1:5000/x/y"


class FakeOrigin:
    """An origin that offers ``relays`` relays, then answers with the metainfo once ``fetched``."""

    def __init__(self, raw: bytes, size: int, relays: int) -> None:
        self.address = Address("127.0.0.1", 8081)
        self.ring = Ring.static("origin", self.address)
        self.base = f"http://{self.address}"
        self.raw, self.size, self.relays = raw, size, relays
        self.fetched = trio.Event()
        self.calls: list[str] = []

    def at(self, member: Address) -> FakeOrigin:
        return self

    async def metainfo_or_pending(self, namespace: str, digest: Digest) -> OriginMetainfo | Pending:
        self.calls.append("metainfo_or_pending")
        if self.relays:
            self.relays -= 1
            return Pending(self.size, self.base)
        await self.fetched.wait()
        return OriginMetainfo(self.raw, "ab" * 10, 6881)

    async def metainfo(self, namespace: str, digest: Digest) -> OriginMetainfo:
        self.calls.append("metainfo")
        await self.fetched.wait()
        return OriginMetainfo(self.raw, "ab" * 10, 6881)


async def test_relay_asks_cost_one_origin_request_and_record_its_metainfo(tmp_path: Path) -> None:
    data = random_bytes(3 << 20, seed=51)
    digest = Digest.of(data)
    (tmp_path / "blob").write_bytes(data)
    metainfo = build_metainfo(tmp_path / "blob", digest)
    origin = FakeOrigin(metainfo.raw, len(data), relays=1)
    peers = PeerStore(ttl=60, max_peers=50)
    directory = OriginDirectory(cast(Any, origin), MemoryStore(peers), cache_size=10, inline_max=1 << 20)
    answers: list[KnownBlob | RelayOffer] = []

    async def ask() -> None:
        answers.append(await directory.metainfo_or_relay(NS, str(digest)))

    async with trio.open_nursery() as nursery:
        directory.bind(nursery)
        for _ in range(4):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == [RelayOffer(origin.base, len(data))]
        # The second ask waits at the origin (past its relay limit), the others behind it here.
        assert origin.calls == ["metainfo_or_pending", "metainfo_or_pending"]
        origin.fetched.set()
    known = KnownBlob(metainfo.raw, metainfo.info_hash, cast(KnownBlob, answers[1]).fetched)
    assert answers[1:] == [known] * 3
    assert origin.calls == ["metainfo_or_pending", "metainfo_or_pending"], "one request per ask, none again"
    # Cached and recorded as a plain fetch would: the origin seeds the torrent.
    assert await directory.metainfo(NS, str(digest)) == known
    assert [p.origin for p in peers.peers_for(metainfo.info_hash)] == [True]
    assert len(origin.calls) == 2
    assert directory._relay_turns == {}, "no lock is left behind"
