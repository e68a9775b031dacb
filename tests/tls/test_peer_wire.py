"""The peer wire on TLS: blobs are SSL torrents of the cluster CA, and an outsider gets no piece."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import httpx
import libtorrent as lt
import trio

from swarmreg.devcluster import tls_overrides
from swarmreg.digest import Digest
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tls.certs import FFDHE2048, KeyPair, issue_peer, make_ca
from tests.conftest import make_config, random_bytes, start_daemon
from tests.origin.helpers import upload_blob
from tests.tls.conftest import client_context

NS = "secure/blobs"


def outsider_session() -> lt.session:
    """A bare libtorrent session on an SSL port, like a cluster node's but without its certificate."""
    return lt.session({"listen_interfaces": "127.0.0.1:0s", "enable_dht": False, "enable_lsd": False,
                       "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                       "enable_incoming_utp": False, "allow_multiple_connections_per_ip": True,
                       "alert_mask": 0})


async def test_only_cluster_members_get_pieces(nursery: trio.Nursery, tmp_path: Path, certs: Path) -> None:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd")),
                              ["origin", "tracker"])
    origin, peer_wire = herd.ready["roles"]["origin"]["http"], herd.ready["roles"]["origin"]["peer"]
    data = random_bytes(4 << 20, seed=9)
    # Uploads are for the proxy and origin roles: the herd's certificate has them.
    async with httpx.AsyncClient(base_url=f"https://{origin}", verify=client_context(certs, "herd"),
                                 timeout=30) as client:
        digest = await upload_blob(client, NS, data, chunk=1 << 20)
        response = await client.get(f"/namespace/{quote(NS, safe='')}/blobs/{digest}/metainfo")
        assert response.status_code == 200
    metainfo = Metainfo.parse(response.content, Digest.parse(digest))
    assert metainfo.root_cert == (certs / "ca.pem").read_bytes(), "an SSL torrent rooted at the cluster CA"

    # Outsiders: no certificate, and a peer certificate from another CA (SAN "*" all the same);
    # and, to show the same bare session does get pieces with one, a member's peer certificate.
    foreign = issue_peer(make_ca(), "outsider")
    member = KeyPair.read(certs / "stranger-peer.pem", certs / "stranger-peer.key")
    host, port = peer_wire.rsplit(":", 1)
    outsiders = []
    for name, cert in (("no-cert", None), ("foreign-ca", foreign), ("member", member)):
        session = outsider_session()
        params = lt.load_torrent_buffer(metainfo.raw)
        params.save_path = str(tmp_path / name)
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handle = session.add_torrent(params)
        if cert is not None:
            handle.set_ssl_certificate_buffer(cert.cert.decode(), cert.key.decode(), FFDHE2048)
        handle.connect_peer((host, int(port)))
        outsiders.append((session, handle))
    # A member agent, started after them, gets the whole blob from the same origin.
    agent = await start_daemon(nursery, make_config(tmp_path / "agent", *tls_overrides(certs, "agent"),
                                                    f"agent.tracker={herd.ready['roles']['tracker']['ws']}"),
                               ["agent"])
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        response = await client.get(f"/namespace/{quote(NS, safe='')}/blobs/{digest}")
        assert response.status_code == 200 and response.content == data
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # give the outsiders every chance
        for _, handle in outsiders:
            handle.connect_peer((host, int(port)))
        await trio.sleep(0.5)
    *strangers, (_, control) = outsiders
    for _, handle in strangers:
        status = handle.status()
        assert status.total_payload_download == 0 and status.num_pieces == 0, "an outsider got a piece"
    assert control.status().is_seeding, "the bare session with a member's certificate got the blob"
    # Uploads are for the proxy and origin roles: the herd's certificate has them.
    async with httpx.AsyncClient(base_url=f"https://{origin}", verify=client_context(certs, "herd"),
                                 timeout=30) as client:
        stats = (await client.get("/stats")).json()
    assert stats["totals"]["uploaded"] >= len(data), "the origin served the member"

