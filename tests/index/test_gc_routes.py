"""The index's garbage-collection routes: the mark (and its dry run), the backfill, and the link
renewals a push makes, each one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.index.gc_client import IndexMarker
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.index.helpers import MANIFEST, digest


@pytest.fixture
async def index(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "index"), ["index"])
    yield running
    await running.stop()


def address(index: RunningDaemon) -> Address:
    return Address.parse(index.ready["roles"]["index"]["http"])


def links(index: RunningDaemon) -> dict[tuple[str, str], str]:
    db = sqlite3.connect(index.config.layout.setting(index.config.index.database))
    try:
        return {(r, d): linked for r, d, linked in db.execute("SELECT repository, digest, linked FROM blobs")}
    finally:
        db.close()


async def test_the_mark_removes_only_old_unreferenced_links_and_answers_the_live_set(index: RunningDaemon) -> None:
    async with IndexClient(address(index)) as client, IndexMarker(address(index)) as marker:
        for n in range(3):
            await client.link_blob("team/a", digest(n), 10)
        await client.put_manifest("team/a", digest("m"), media_type=MANIFEST, size=5, blobs=[digest(0)])
        young = await marker.mark(3600, dry_run=False)
        assert young.links_removed == 0
        assert young.live == {str(digest(n)) for n in (0, 1, 2, "m")}

        dry = await marker.mark(0, dry_run=True)
        assert (dry.links_removed, dry.live) == (2, {str(digest(0)), str(digest("m"))})
        assert len(links(index)) == 3  # a dry run changes nothing
        real = await marker.mark(0, dry_run=False)
        assert (real.links_removed, real.live) == (dry.links_removed, dry.live)
        assert set(links(index)) == {("team/a", str(digest(0)))}


async def test_the_mark_is_refused_while_references_are_unknown_and_the_backfill_records_them(
        index: RunningDaemon) -> None:
    async with IndexClient(address(index)) as client, IndexMarker(address(index)) as marker:
        await client.link_blob("team/a", digest(0), 10)
        await client.put_manifest("team/a", digest("m"), media_type=MANIFEST, size=5, blobs=[digest(0)])
        db = sqlite3.connect(index.config.layout.setting(index.config.index.database), isolation_level=None)
        db.execute("UPDATE manifests SET refs_known = 0")
        db.execute("DELETE FROM refs")
        db.close()
        with pytest.raises(SwarmregError) as refused:
            await marker.mark(0, dry_run=False)
        assert refused.value.code.code == "GC_REFS_UNKNOWN"
        assert len(links(index)) == 1  # nothing removed

        assert await marker.unknown_manifests() == [
            {"repository": "team/a", "digest": str(digest("m")), "media_type": MANIFEST}]
        assert await marker.unknown_manifests(f"team/a@{digest('m')}") == []
        await marker.record_references("team/a", digest("m"), [digest(0)], [])
        with pytest.raises(SwarmregError) as gone:
            await marker.record_references("team/b", digest("m"), [], [])
        assert gone.value.code.code == "MANIFEST_UNKNOWN"
        assert (await marker.mark(0, dry_run=False)).live == {str(digest(0)), str(digest("m"))}


async def test_a_renewal_or_a_mount_never_makes_a_link_from_nothing(index: RunningDaemon) -> None:
    async with IndexClient(address(index)) as client:
        assert await client.renew_blob("team/a", digest(0)) is None
        assert await client.mount_blob("team/a", "team/b", digest(0)) is None
        assert links(index) == {}
        await client.link_blob("team/a", digest(0), 42)
        before = links(index)[("team/a", str(digest(0)))]
        await trio.sleep(0.01)  # the link time has milliseconds
        assert await client.renew_blob("team/a", digest(0)) == 42
        assert links(index)[("team/a", str(digest(0)))] > before
        assert await client.mount_blob("team/a", "team/b", digest(0)) == 42
        assert ("team/b", str(digest(0))) in links(index)


async def test_bad_mark_requests_change_nothing(index: RunningDaemon) -> None:
    async with IndexClient(address(index)) as client, \
            httpx.AsyncClient(base_url=f"http://{address(index)}") as raw:
        await client.link_blob("team/a", digest(0), 10)
        for grace in ("", "-1", "nan", "1e99", "x"):
            response = await raw.post("/gc/mark", params={"grace": grace})
            assert response.status_code == 400, grace
        for body in ([], {"repository": "team/a"}, {"repository": "Bad", "digest": str(digest(0)), "blobs": [],
                                                   "children": []}):
            assert (await raw.post("/gc/refs", json=body)).status_code == 400
        assert len(links(index)) == 1
