"""A lying origin: metainfo that describes other content than the digest it is served for.

Every piece then passes libtorrent's checks (the metainfo is self-consistent), so
only the whole-blob sha256 can catch it: the agent must cut the response before
its last bytes and keep nothing under the digest.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from quart import Response
from quart_trio import QuartTrio

from swarmreg.config import Address, HttpConfig, SwarmConfig
from swarmreg.digest import Digest
from swarmreg.http.serve import serve_http
from swarmreg.origin.wire import PEER_ID_HEADER, PEER_PORT_HEADER
from swarmreg.swarm.engine import SwarmEngine
from swarmreg.swarm.metainfo import build_metainfo
from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.origin.helpers import blob_path

NS = "library/lies"


async def test_a_blob_that_does_not_match_its_digest_is_never_served_whole(nursery: trio.Nursery,
                                                                           tmp_path: Path) -> None:
    claimed = Digest.of(b"what the client asked for")
    impostor = random_bytes(3 << 20)
    # The impostor's bytes, in a file named by the claimed digest, seeded by a real session.
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / claimed.hex).write_bytes(impostor)
    metainfo = build_metainfo(seed_dir / claimed.hex, claimed)
    seeder = SwarmEngine(SwarmConfig(listen=Address("127.0.0.1", 0)))
    await nursery.start(seeder.run)
    await seeder.add(metainfo, seed_dir, seed=True)

    liar = QuartTrio("liar")

    @liar.get("/namespace/<path:namespace>/blobs/<digest>/metainfo")
    async def lie(namespace: str, digest: str) -> Response:
        return Response(metainfo.raw, headers={PEER_ID_HEADER: "ab" * 10,
                                               PEER_PORT_HEADER: str(seeder.address.port)})

    stop = trio.Event()
    liar_address = await nursery.start(partial(serve_http, liar, Address("127.0.0.1", 0), http=HttpConfig(),
                                               stop=stop, graceful_timeout=1))
    tracker = await start_daemon(nursery, make_config(tmp_path / "tracker", f"tracker.origins=['{liar_address}']"),
                                 ["tracker"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={tracker.ready['roles']['tracker']['ws']}"), ["agent"])

    received = 0
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        with pytest.raises(httpx.HTTPError):
            async with client.stream("GET", blob_path(NS, str(claimed))) as response:
                assert response.status_code == 200  # the response started before the lie showed
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
        assert received < len(impostor), "the last piece was held back"
        # Nothing is kept under the digest, and the agent serves on.
        agent_dir = Path(agent.config.data_dir)
        assert blob_files(agent_dir) == {}
        assert list((agent_dir / "downloads").iterdir()) == []
        assert not (agent_dir / "metainfo" / f"{claimed.hex}.torrent").exists()
        assert (await client.get("/health")).status_code == 200
    stop.set()
    seeder.close()
