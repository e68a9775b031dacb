"""Pushes under way are noted at the index (the `pending` table garbage collection keeps): before
the origin stores a blob or a manifest's bytes, and ended by the link or record that names them,
or cleared when the push fails."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.digest import Digest
from swarmreg.index.client import IndexClient
from swarmreg.index.sqlite_store import SqliteIndexStore
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_image

REPO = "team/app"


def pending_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(data_dir / "index.db")
    try:
        return db.execute("SELECT digest, token, until FROM pending").fetchall()
    finally:
        db.close()


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "index", "proxy"])
    yield running
    await running.stop()


async def test_a_push_leaves_no_note_behind_and_a_failed_commit_clears_its_own(
        herd: RunningDaemon, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as registry:
        await push_image(registry, REPO, "v1", [random_bytes(100_000, seed=1)])
        assert pending_rows(tmp_path / "herd") == []
        # A monolithic upload whose bytes miss its digest: refused, and its note is gone with it.
        wrong = digest_of(b"something else")
        response = await registry.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": wrong},
                                       content=b"these bytes", headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 400 and response.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert pending_rows(tmp_path / "herd") == []


async def test_a_note_holds_until_its_link_names_it_or_it_is_cleared(tmp_path: Path) -> None:
    blob = Digest.of(b"layer")
    async with SqliteIndexStore(tmp_path / "index.db") as store:
        await store.note_pending(blob, "a" * 32, 60)
        await store.note_pending(blob, "b" * 32, 60)  # a second push of the same blob
        await store.link_blob(REPO, blob, 5, pending="a" * 32)
        assert [row[1] for row in pending_rows(tmp_path)] == ["b" * 32]  # the other push still runs
        await store.clear_pending(blob, "b" * 32)
        assert pending_rows(tmp_path) == []
        manifest = Digest.of(b"manifest")
        await store.note_pending(manifest, "c" * 32, 60)
        await store.put_manifest(REPO, manifest, media_type="application/vnd.oci.image.manifest.v1+json", size=8,
                                 blobs=[blob], pending="c" * 32)
        assert pending_rows(tmp_path) == []


async def test_the_pending_route_wants_a_token(herd: RunningDaemon) -> None:
    async with httpx.AsyncClient(base_url=herd.url("index"), timeout=60) as index:
        digest = digest_of(b"x")
        for params in ({}, {"token": "short"}, {"token": "../" + "0" * 29}):
            response = await index.put(f"/pending/{digest}", params=params)
            assert response.status_code == 400 and response.json()["errors"][0]["code"] == "BAD_REQUEST"
        assert (await index.put(f"/pending/{digest}", params={"token": "0" * 32})).status_code == 204
        assert (await index.put("/pending/sha256:nothex", params={"token": "0" * 32})).status_code == 400
        assert (await index.delete(f"/pending/{digest}", params={"token": "0" * 32})).status_code == 204


async def test_a_push_that_fails_inside_its_note_clears_it(herd: RunningDaemon, tmp_path: Path) -> None:
    digest = Digest.of(b"layer")
    async with IndexClient(herd.url("index")) as index:
        with pytest.raises(RuntimeError, match="the origin failed"):
            async with index.pending(digest) as token:
                assert [row[:2] for row in pending_rows(tmp_path / "herd")] == [(str(digest), token)]
                raise RuntimeError("the origin failed")
        assert pending_rows(tmp_path / "herd") == []
        async with index.pending(digest) as token:  # ended by the link that names it
            await index.link_blob(REPO, digest, 5, pending=token)
        assert pending_rows(tmp_path / "herd") == []
