"""An agent whose disk is full answers pulls with a clear 5xx and serves on (a real tmpfs)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.agent.test_agent_api import NS, start_agent, start_herd, upload
from tests.conftest import random_bytes
from tests.origin.helpers import blob_path, fill, tmpfs


async def test_a_pull_onto_a_full_disk_is_a_clear_error_and_the_agent_serves_on(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "16m") as disk:
        async with trio.open_nursery() as nursery:
            herd = await start_herd(nursery, tmp_path)
            agent = await start_agent(nursery, disk, herd, "agent")  # its data directory is on the small disk
            held = random_bytes(64 << 10, seed=1)  # comes inline with its metainfo
            held_digest = await upload(herd, held)
            big = random_bytes(6 << 20, seed=2)
            digest = await upload(herd, big)
            async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
                assert (await client.get(blob_path(NS, held_digest))).content == held
                # No room even for the metainfo: an error before the first byte, in the envelope.
                filler = fill(disk)
                with trio.fail_after(60):
                    response = await client.get(blob_path(NS, digest))
                assert response.status_code == 507, response.text
                assert response.headers["content-type"] == "application/json"
                [error] = response.json()["errors"]
                assert error["code"] == "STORAGE_FULL" and "/" not in error["message"], error
                assert "Traceback" not in response.text
                filler.unlink()
                # Room for the metainfo, not for the blob: libtorrent's writes fail. The answer is
                # an error, or (when pieces were released first) a 200 cut short, never the blob.
                filler = fill(disk, leave=256 << 10)
                with trio.fail_after(60):
                    try:
                        response = await client.get(blob_path(NS, digest))
                    except httpx.RemoteProtocolError:
                        pass  # cut short
                    else:
                        assert response.status_code >= 500 and str(disk) not in response.text
                assert (await client.get("/health")).status_code == 200
                assert (await client.get(blob_path(NS, held_digest))).content == held
                # Room again: the failed torrent is gone and the next pull starts afresh.
                filler.unlink()
                with trio.fail_after(60):
                    again = await client.get(blob_path(NS, digest))
                assert again.status_code == 200 and again.content == big
            await agent.stop()
            await herd.stop()
