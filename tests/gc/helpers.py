"""A herd to collect garbage on, and what the collector tests look at."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import trio

from swarmreg.config import Address
from swarmreg.origin.client import OriginClient
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.proxy.helpers import OCI_INDEX, digest_of

HERD = ["origin", "tracker", "index", "proxy"]


async def start_herd(nursery: trio.Nursery, data_dir: Path, *overrides: str) -> RunningDaemon:
    """Proxy, origin, tracker and index in one daemon, collecting with ``gc.grace = 0`` unless overridden."""
    return await start_daemon(nursery, make_config(data_dir, "gc.grace=0", *overrides), HERD)


async def collect(herd: RunningDaemon, *, dry_run: bool = False) -> dict[str, Any]:
    """One collection through the origin's API, as the proxy's admin API and `swarmreg gc` ask for it."""
    async with OriginClient(Address.parse(herd.ready["roles"]["origin"]["http"])) as origin:
        return await origin.collect_garbage(dry_run=dry_run)


def held_blobs(data_dir: Path) -> set[str]:
    """The digests of every blob in the herd's store and in its filesystem backend."""
    found = set()
    for root in (data_dir, data_dir / "backend"):
        for path in (root / "blobs").glob("*/*/*"):
            found.add(f"{path.parent.parent.name}:{path.name}")
    return found


def data_bytes(data_dir: Path, pattern: str = "**/*") -> int:
    """Bytes of the files under the data directory (those ``pattern`` matches), each inode once
    (the backend hard-links the store's)."""
    inodes = {}
    for path in data_dir.glob(pattern):
        if path.is_file():
            stat = path.stat()
            inodes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(inodes.values())


def index_db(herd: RunningDaemon) -> sqlite3.Connection:
    """A second connection to the herd's index database (WAL: it may write beside the daemon)."""
    db = sqlite3.connect(herd.config.layout.setting(herd.config.index.database), isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    return db


def age_everything(herd: RunningDaemon, seconds: float = 86400.0) -> None:
    """Make every blob link and blob file ``seconds`` old, as if pushed that long ago."""
    db = index_db(herd)
    try:
        db.execute("UPDATE blobs SET linked = '2000-01-01T00:00:00.000Z'")
    finally:
        db.close()
    old = os.stat(herd.config.layout.root).st_mtime - seconds
    for root in (herd.config.layout.root, herd.config.layout.root / "backend"):
        for path in (root / "blobs").glob("*/*/*"):
            os.utime(path, (old, old))


def image_index(children: list[tuple[str, bytes]]) -> bytes:
    """An OCI image index listing these (digest, manifest bytes) children."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": json.loads(data)["mediaType"], "digest": digest, "size": len(data),
         "platform": {"architecture": f"arch{n}", "os": "linux"}} for n, (digest, data) in enumerate(children)]}
    ).encode()


async def pull_image(proxy: httpx.AsyncClient, repository: str, reference: str) -> dict[str, bytes]:
    """Every blob of the image (and the manifest) through the proxy, checked against its digest."""
    response = await proxy.get(f"/v2/{repository}/manifests/{reference}")
    assert response.status_code == 200, response.text
    manifest = json.loads(response.content)
    pulled = {response.headers["docker-content-digest"]: response.content}
    for descriptor in (manifest["config"], *manifest["layers"]):
        blob = await proxy.get(f"/v2/{repository}/blobs/{descriptor['digest']}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == descriptor["digest"]
        pulled[descriptor["digest"]] = blob.content
    return pulled
