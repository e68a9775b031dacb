"""sha512 end to end: blobs and a manifest pushed through the proxy under sha512 digests, pulled by an
agent through the swarm, and read and written through the Kraken blob API of the origin and the agent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import trio

from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from tests.conftest import make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error, blob_path, patch, start_upload
from tests.origin.helpers import commit as commit_upload
from tests.proxy.helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

REPO = "team/sha512"
CHUNK = 1 << 20


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def held(data_dir: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return data_dir / "blobs" / algorithm / hex_[:2] / hex_


async def push_chunked(proxy: httpx.AsyncClient, data: bytes, digest: str) -> httpx.Response:
    """POST, PATCH chunks with Content-Range, and a closing PUT carrying the last chunk."""
    opened = await proxy.post(f"/v2/{REPO}/blobs/uploads/")
    assert opened.status_code == 202, opened.text
    location = opened.headers["location"]
    for start in range(0, len(data) - CHUNK, CHUNK):
        chunk = data[start:start + CHUNK]
        response = await proxy.patch(location, content=chunk, headers={
            "Content-Range": f"{start}-{start + len(chunk) - 1}", "Content-Type": "application/octet-stream"})
        assert response.status_code == 202, response.text
        location = response.headers["location"]
    last = (len(data) - 1) // CHUNK * CHUNK
    return await proxy.put(location, params={"digest": digest}, content=data[last:], headers={
        "Content-Range": f"{last}-{len(data) - 1}", "Content-Type": "application/octet-stream"})


async def test_sha512_through_proxy_swarm_agent_and_kraken_api(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}"),
        ["agent"])
    # Over the tracker's inline limit (1 MiB): it can only reach the agent over the peer wire.
    layer = random_bytes(3 * CHUNK + 12345, seed=51)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha512(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha512(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha512(layer), "size": len(layer)}],
    }).encode()

    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        # Monolithic single POST, then a chunked upload: both verified with sha512.
        response = await proxy.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha512(config)},
                                    content=config)
        assert response.status_code == 201, response.text
        assert response.headers["docker-content-digest"] == sha512(config)
        assert response.headers["location"].endswith(f"/v2/{REPO}/blobs/{sha512(config)}")
        response = await proxy.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha512(b"")}, content=b"")
        assert response.status_code == 201, response.text
        wrong = await push_chunked(proxy, layer, sha512(layer[:-1]))
        assert_error(wrong, 400, "DIGEST_INVALID")
        response = await push_chunked(proxy, layer, sha512(layer))
        assert response.status_code == 201, response.text
        assert response.headers["docker-content-digest"] == sha512(layer)
        head = await proxy.head(f"/v2/{REPO}/blobs/{sha512(layer)}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(layer))
        assert head.headers["docker-content-digest"] == sha512(layer)
        # By digest the manifest is verified with (and stored under) sha512; by tag its digest is sha256.
        mismatch = await proxy.put(f"/v2/{REPO}/manifests/{sha512(config)}", content=manifest,
                                   headers={"Content-Type": OCI_MANIFEST})
        assert_error(mismatch, 400, "DIGEST_INVALID")
        by_digest = await proxy.put(f"/v2/{REPO}/manifests/{sha512(manifest)}", content=manifest,
                                    headers={"Content-Type": OCI_MANIFEST})
        assert by_digest.status_code == 201, by_digest.text
        assert by_digest.headers["docker-content-digest"] == sha512(manifest)
        by_tag = await proxy.put(f"/v2/{REPO}/manifests/v1", content=manifest,
                                 headers={"Content-Type": OCI_MANIFEST})
        assert by_tag.status_code == 201 and by_tag.headers["docker-content-digest"] == sha256(manifest)
        # A sha512 digest of the wrong length, or an unregistered algorithm, is refused.
        assert_error(await proxy.get(f"/v2/{REPO}/blobs/sha512:{'ab' * 32}"), 400, "DIGEST_INVALID")
        assert_error(await proxy.get(f"/v2/{REPO}/blobs/sha384:{'ab' * 48}"), 400, "DIGEST_INVALID")

    herd_dir = Path(herd.config.data_dir)
    assert held(herd_dir, sha512(layer)).read_bytes() == layer
    assert not held(herd_dir, sha256(layer)).exists()

    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=60) as registry:
        response = await registry.get(f"/v2/{REPO}/manifests/{sha512(manifest)}",
                                      headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200 and response.content == manifest
        assert response.headers["docker-content-digest"] == sha512(manifest)
        response = await registry.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert response.content == manifest and response.headers["docker-content-digest"] == sha256(manifest)
        assert (await registry.get(f"/v2/{REPO}/blobs/{sha512(config)}")).content == config
        pulled = await registry.get(f"/v2/{REPO}/blobs/{sha512(layer)}")
        assert pulled.status_code == 200 and pulled.content == layer
        assert pulled.headers["docker-content-digest"] == sha512(layer)
        empty = await registry.get(f"/v2/{REPO}/blobs/{sha512(b'')}")
        assert empty.status_code == 200 and empty.content == b"", "the empty blob has no torrent"
        ranged = await registry.get(f"/v2/{REPO}/blobs/{sha512(layer)}", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == layer[100:200]
    agent_dir = Path(agent.config.data_dir)
    assert held(agent_dir, sha512(layer)).read_bytes() == layer
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as agent_http:
        stats = (await agent_http.get("/stats")).json()
    assert sha512(layer) not in stats["inline"]["blobs"], "too big to come inline with the metainfo"
    assert stats["totals"]["downloaded_from"]["origin"] >= len(layer), "it came over the peer wire"

    async with httpx.AsyncClient(base_url=herd.url("origin"), timeout=60) as origin:
        # The Kraken blob API: the blob pushed through the proxy, its torrent, and a sha512 upload.
        response = await origin.get(blob_path(REPO, sha512(layer)))
        assert response.status_code == 200 and response.content == layer
        metainfo = await origin.get(f"{blob_path(REPO, sha512(layer))}/metainfo")
        assert metainfo.status_code == 200
        parsed = Metainfo.parse(metainfo.content, Digest.parse(sha512(layer)))
        assert parsed.size == len(layer)
        kraken = random_bytes(2 * CHUNK + 7, seed=52)
        uid = await start_upload(origin, REPO, sha512(kraken))
        for start in range(0, len(kraken), CHUNK):
            response = await patch(origin, REPO, sha512(kraken), uid, kraken[start:start + CHUNK], start)
            assert response.status_code == 200, response.text
        response = await commit_upload(origin, REPO, sha512(kraken), uid)
        assert response.status_code == 200 and response.headers["docker-content-digest"] == sha512(kraken)
        assert (await origin.head(blob_path(REPO, sha512(kraken)))).headers["content-length"] == str(len(kraken))
        uid = await start_upload(origin, REPO, sha512(b"promised"))
        await patch(origin, REPO, sha512(b"promised"), uid, b"delivered", 0)
        assert_error(await commit_upload(origin, REPO, sha512(b"promised"), uid), 400, "DIGEST_INVALID")
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as agent_http:
        response = await agent_http.get(blob_path(REPO, sha512(kraken)))
        assert response.status_code == 200 and response.content == kraken
        assert response.headers["docker-content-digest"] == sha512(kraken)
