"""Who may write on the internal ports (issue 11, point 1).

With ``[tls]``: each role's certificate against every write endpoint of the index and the origin,
and against the tracker's origin announce, allowed and refused (a peer-wire certificate and an
agent's read only). Without it: the cluster secret present, absent and wrong. And the daemon that
would expose internal ports beyond loopback with neither refuses to start, unless told so.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket

from swarmreg.config import Address, ConfigError, load_config
from swarmreg.daemon import Daemon, DaemonError
from swarmreg.devcluster import DaemonProcess, make_dev_certs, tls_overrides
from swarmreg.digest import Digest
from swarmreg.errors import BAD_GATEWAY, SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.origin.client import OriginClient
from swarmreg.swarm.metainfo import Metainfo
from swarmreg.tls.certs import cert_roles
from swarmreg.tracker.wire import TO_PEER, Announce, AnnounceReply, Peer, decode, encode
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error, blob_path, upload_blob
from tests.proxy.helpers import push_image

NS = "authz/blobs"
SECRET = "a-cluster-secret-0123456789abcdef"
HERD_ROLES = ("origin", "tracker", "index")
# The certificates of the matrix: a node certificate per role, and a peer-wire certificate.
ROLE_CERTS = ("proxy", "origin", "index", "agent", "tracker")
CALLERS = (*ROLE_CERTS, "peer-wire")
INDEX_WRITERS = {"proxy", "index"}
ORIGIN_WRITERS = {"proxy", "origin"}
TRACKER_ORIGINS = {"origin"}


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """The herd's certificate (its daemon's roles) and one per role, each carrying just that role."""
    directory = tmp_path / "certs"
    make_dev_certs(directory, {"herd": HERD_ROLES, **{role: (role,) for role in ROLE_CERTS}})
    return directory


def context(certs: Path, caller: str) -> ssl.SSLContext:
    """A client context presenting ``caller``'s certificate ("peer-wire": the herd's peer-wire one)."""
    name = "herd-peer" if caller == "peer-wire" else caller
    verify = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    verify.load_cert_chain(certs / f"{name}.pem", certs / f"{name}.key")
    return verify


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path, certs: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd")),
                                 list(HERD_ROLES))
    yield running
    await running.stop()


def client(herd: RunningDaemon, role: str, verify: ssl.SSLContext, **kwargs: Any) -> httpx.AsyncClient:
    scheme = "https" if herd.config.tls.enabled else "http"
    return httpx.AsyncClient(base_url=f"{scheme}://{herd.ready['roles'][role]['http']}", verify=verify,
                             timeout=30, **kwargs)


def test_certificates_carry_their_roles_as_uri_names(certs: Path) -> None:
    assert cert_roles((certs / "herd.pem").read_bytes()) == set(HERD_ROLES)
    assert cert_roles((certs / "proxy.pem").read_bytes()) == {"proxy"}
    assert cert_roles((certs / "herd-peer.pem").read_bytes()) == set(), "a peer-wire certificate reads only"


def test_dev_certificates_get_the_devcluster_roles(tmp_path: Path) -> None:
    make_dev_certs(tmp_path, ["herd", "agent-one", "stranger"])
    assert cert_roles((tmp_path / "herd.pem").read_bytes()) == {"origin", "tracker", "index", "proxy"}
    assert cert_roles((tmp_path / "agent-one.pem").read_bytes()) == {"agent"}
    assert cert_roles((tmp_path / "stranger.pem").read_bytes()) == set()
    make_dev_certs(tmp_path, {"stranger": ("index",)})  # other roles asked for: issued again
    assert cert_roles((tmp_path / "stranger.pem").read_bytes()) == {"index"}


def test_certs_issue_takes_roles(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swarmreg", "certs", *args, "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)

    assert run("init").returncode == 0
    issued = run("issue", "edge", "--roles", "proxy,origin")
    assert issued.returncode == 0, issued.stderr
    assert cert_roles((tmp_path / "edge.pem").read_bytes()) == {"proxy", "origin"}
    assert cert_roles((tmp_path / "edge-peer.pem").read_bytes()) == set()
    assert run("issue", "reader").returncode == 0
    assert cert_roles((tmp_path / "reader.pem").read_bytes()) == set(), "no --roles: no write roles"
    bad = run("issue", "typo", "--roles", "proxy,origni")
    assert bad.returncode == 2 and "unknown role 'origni'" in bad.stderr
    assert not (tmp_path / "typo.pem").exists()
    # Standard tools read the convention: the roles are URI subjectAltNames.
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "edge.pem")],
                          capture_output=True, text=True, timeout=60)
    if text.returncode == 0:
        assert "URI:swarmreg:role:proxy" in text.stdout and "URI:swarmreg:role:origin" in text.stdout


# -- the index -------------------------------------------------------------------------------

def index_writes(repository: str) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    """Every write of the index API, in an order that succeeds: (method, path, body, status)."""
    blob, manifest = Digest.of(b"layer " + repository.encode()), Digest.of(b"manifest " + repository.encode())
    base = f"/repositories/{repository}"
    return [("PUT", f"{base}/blobs/{blob}", {"size": 6}, 201),
            ("PUT", f"{base}/manifests/{manifest}",
             {"media_type": "application/vnd.oci.image.manifest.v1+json", "size": 9}, 201),
            ("PUT", f"{base}/tags/latest", {"digest": str(manifest)}, 201),
            ("DELETE", f"{base}/tags/latest", None, 202),
            ("DELETE", f"{base}/manifests/{manifest}", None, 202),
            ("DELETE", f"{base}/blobs/{blob}", None, 202)]


async def test_index_writes_are_for_the_proxy_and_index_roles(herd: RunningDaemon, certs: Path) -> None:
    async with client(herd, "index", context(certs, "herd")) as writer:  # records the refused may try to delete
        for method, path, body, _ in index_writes("authz/existing")[:3]:
            assert (await writer.request(method, path, json=body)).status_code == 201
    for caller in CALLERS:
        async with client(herd, "index", context(certs, caller)) as index:
            if caller in INDEX_WRITERS:
                for method, path, body, status in index_writes(f"authz/{caller}"):
                    response = await index.request(method, path, json=body)
                    assert response.status_code == status, (caller, method, path, response.text)
            else:
                for method, path, body, _ in [*index_writes(f"authz/{caller}"),
                                              *index_writes("authz/existing")[3:]]:
                    response = await index.request(method, path, json=body)
                    assert_error(response, 403, "DENIED")
                    assert caller.split("-")[0] in response.text or caller == "peer-wire", response.text
                assert (await index.get(f"/repositories/authz/{caller}/tags/latest")).status_code == 404
            # Reads stay open to every cluster identity.
            assert (await index.get("/repositories/authz/existing/tags/latest")).status_code == 200
            assert (await index.get("/repositories")).status_code == 200


# -- the origin ------------------------------------------------------------------------------

def origin_writes(digest: str, uid: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every upload and delete of the origin API: (method, path, query)."""
    blob = blob_path(NS, digest)
    return [("POST", f"{blob}/uploads", {}),
            ("PATCH", f"{blob}/uploads/{uid}", {}),
            ("PUT", f"{blob}/uploads/{uid}", {}),
            ("POST", "/uploads", {"namespace": NS}),
            ("PATCH", f"/uploads/{uid}", {"namespace": NS}),
            ("GET", f"/uploads/{uid}", {"namespace": NS}),
            ("PUT", f"/uploads/{uid}", {"namespace": NS, "digest": digest}),
            ("DELETE", f"/uploads/{uid}", {"namespace": NS})]


async def session_upload(origin: httpx.AsyncClient, data: bytes) -> str:
    """Open a session, append ``data``, ask its status, commit; returns the digest."""
    digest = str(Digest.of(data))
    opened = await origin.post("/uploads", params={"namespace": NS})
    assert opened.status_code == 200, opened.text
    uid = opened.headers["Location"]
    assert (await origin.patch(f"/uploads/{uid}", params={"namespace": NS}, content=data)).status_code == 200
    assert (await origin.get(f"/uploads/{uid}", params={"namespace": NS})).headers["Upload-Size"] == str(len(data))
    committed = await origin.put(f"/uploads/{uid}", params={"namespace": NS, "digest": digest})
    assert committed.status_code == 200, committed.text
    cancelled = await origin.post("/uploads", params={"namespace": NS})
    deleted = await origin.delete(f"/uploads/{cancelled.headers['Location']}", params={"namespace": NS})
    assert deleted.status_code == 204, deleted.text
    return digest


async def test_origin_uploads_are_for_the_proxy_and_origin_roles(herd: RunningDaemon, certs: Path) -> None:
    async with client(herd, "origin", context(certs, "proxy")) as proxy:
        pending = await proxy.post("/uploads", params={"namespace": NS})  # a live session to aim at
        uid = pending.headers["Location"]
    for n, caller in enumerate(CALLERS):
        data = random_bytes(64 << 10, seed=n)
        digest = str(Digest.of(data))
        async with client(herd, "origin", context(certs, caller)) as origin:
            if caller in ORIGIN_WRITERS:
                assert await upload_blob(origin, NS, data, chunk=16 << 10) == digest
                await session_upload(origin, data[::-1])
                assert (await origin.head(blob_path(NS, digest))).status_code == 200
            else:
                for method, path, query in origin_writes(digest, uid):
                    response = await origin.request(method, path, params=query, content=b"x" * 16)
                    assert_error(response, 403, "DENIED")
                assert (await origin.head(blob_path(NS, digest))).status_code == 404, "nothing was stored"
            # Reads stay open: the blob the proxy pushed, and the health check.
            assert (await origin.get("/health")).status_code == 200
    async with client(herd, "origin", context(certs, "proxy")) as proxy:
        status = await proxy.get(f"/uploads/{uid}", params={"namespace": NS})
        assert status.headers["Upload-Size"] == "0", "the refused PATCHes wrote nothing"


# -- the tracker -----------------------------------------------------------------------------

@asynccontextmanager
async def channel(herd: RunningDaemon, verify: ssl.SSLContext | None,
                  headers: list[tuple[bytes, bytes]] | None = None) -> AsyncIterator[WebSocketConnection]:
    host, _, port = herd.ready["roles"]["tracker"]["ws"].rpartition(":")
    async with open_websocket(host, int(port), "/announce", use_ssl=verify or False, max_message_size=16 << 20,
                              extra_headers=headers) as ws:
        yield ws


async def announce(ws: WebSocketConnection, metainfo: Metainfo, digest: str, n: int, origin: bool) -> AnnounceReply:
    await ws.send_message(encode(Announce(n, metainfo.info_hash, digest, NS,
                                          Peer(f"{n + 100:020x}", "", 7000 + n, complete=True, origin=origin))))
    with trio.fail_after(10):
        reply = decode(await ws.get_message(), TO_PEER, 16 << 20)
    assert isinstance(reply, AnnounceReply)
    return reply


async def uploaded(herd: RunningDaemon, verify: ssl.SSLContext, **kwargs: Any) -> tuple[str, Metainfo]:
    async with client(herd, "origin", verify, **kwargs) as origin:
        digest = await upload_blob(origin, NS, random_bytes(2 << 20, seed=77))
        response = await origin.get(f"{blob_path(NS, digest)}/metainfo")
    return digest, Metainfo.parse(response.content, Digest.parse(digest))


async def test_origin_announces_are_for_the_origin_role(herd: RunningDaemon, certs: Path) -> None:
    digest, metainfo = await uploaded(herd, context(certs, "proxy"))
    for n, caller in enumerate(CALLERS, start=1):
        async with channel(herd, context(certs, caller)) as ws:
            reply = await announce(ws, metainfo, digest, n, origin=True)
            if caller in TRACKER_ORIGINS:
                assert reply.failure is None, reply.failure
            else:
                assert reply.failure is not None and reply.failure.code == "DENIED", (caller, reply)
                # The same peer may take part as what it is: a peer, not an origin.
                assert (await announce(ws, metainfo, digest, n, origin=False)).failure is None
        # The origin's announce counts while its connection lives: a peer lists it as an origin.
        if caller in TRACKER_ORIGINS:
            async with channel(herd, context(certs, caller)) as ws, channel(herd, context(certs, "agent")) as other:
                assert (await announce(ws, metainfo, digest, 50, origin=True)).failure is None
                listed = await announce(other, metainfo, digest, 51, origin=False)
                assert any(p.origin and p.peer_id == f"{150:020x}" for p in listed.peers), listed.peers


# -- the cluster secret, without [tls] ---------------------------------------------------------

@pytest.fixture
async def secret_herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, make_config(tmp_path / "herd", f'cluster.secret="{SECRET}"'),
                                 ["origin", "tracker", "index", "proxy"])
    yield running
    await running.stop()


SECRETS: dict[str, dict[str, str]] = {
    "absent": {}, "wrong": {"Authorization": "Bearer not-the-secret"},
    "another scheme": {"Authorization": f"Basic {SECRET}"}, "present": {"Authorization": f"Bearer {SECRET}"}}


async def test_internal_writes_need_the_cluster_secret(secret_herd: RunningDaemon) -> None:
    for name, headers in SECRETS.items():
        async with client(secret_herd, "index", ssl.create_default_context(), headers=headers) as index:
            writes = index_writes(f"secret/{name.replace(' ', '-')}")
            for method, path, body, status in writes:
                response = await index.request(method, path, json=body)
                if name == "present":
                    assert response.status_code == status, (method, path, response.text)
                else:
                    assert_error(response, 401, "UNAUTHORIZED")
                    assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
                    assert SECRET not in response.text
            assert (await index.get("/repositories")).status_code == 200, "reads need no secret"
        data = random_bytes(32 << 10, seed=len(name))
        async with client(secret_herd, "origin", ssl.create_default_context(), headers=headers) as origin:
            if name == "present":
                await upload_blob(origin, NS, data)
                await session_upload(origin, data[::-1])
            else:
                for method, path, query in origin_writes(str(Digest.of(data)), "0" * 8 + "-0000-4000-8000-" + "0" * 12):
                    response = await origin.request(method, path, params=query, content=b"x")
                    assert_error(response, 401, "UNAUTHORIZED")
                assert (await origin.head(blob_path(NS, str(Digest.of(data))))).status_code == 404


async def test_our_clients_send_the_secret(secret_herd: RunningDaemon) -> None:
    origin_address = secret_herd.ready["roles"]["origin"]["http"]
    index_address = secret_herd.ready["roles"]["index"]["http"]
    async with OriginClient(Address.parse(origin_address), secret=SECRET) as origin:
        uid = await origin.open_session(NS)
        assert uid
    async with IndexClient(index_address, secret=SECRET) as index:
        blob = Digest.of(b"linked")
        await index.link_blob("secret/client", blob, 6)
    # The proxy in the herd writes with the secret too: a docker-style push goes through.
    async with httpx.AsyncClient(base_url=secret_herd.url("proxy"), timeout=30) as registry:
        await push_image(registry, "secret/pushed", "v1", [random_bytes(4096, seed=5)])
    async with OriginClient(Address.parse(origin_address)) as anonymous:
        with pytest.raises(SwarmregError) as refused:
            await anonymous.open_session(NS)
        # A refusal of this node's credentials is the node's misconfiguration: a proxy relays it as
        # BAD_GATEWAY, not as a 401 its docker client would take for its own login.
        assert refused.value.code is BAD_GATEWAY and refused.value.detail == {"upstream": "UNAUTHORIZED"}


async def test_origin_announces_need_the_cluster_secret(secret_herd: RunningDaemon) -> None:
    digest, metainfo = await uploaded(secret_herd, ssl.create_default_context(),
                                      headers={"Authorization": f"Bearer {SECRET}"})
    cases = {"absent": ([], "UNAUTHORIZED"), "wrong": ([(b"authorization", b"Bearer nope")], "UNAUTHORIZED"),
             "present": ([(b"authorization", f"Bearer {SECRET}".encode())], None)}
    for n, (headers, code) in enumerate(cases.values(), start=1):
        async with channel(secret_herd, None, headers) as ws:
            reply = await announce(ws, metainfo, digest, n, origin=True)
            assert (reply.failure.code if reply.failure else None) == code, reply
            assert (await announce(ws, metainfo, digest, n, origin=False)).failure is None


# -- the refusal to start ----------------------------------------------------------------------

EXPOSED = {"origin": "origin.listen", "index": "index.listen", "tracker": "tracker.listen",
           "agent": "agent.listen"}


@pytest.mark.parametrize("role", sorted(EXPOSED))
def test_a_daemon_exposing_internal_ports_without_tls_or_secret_refuses(tmp_path: Path, role: str) -> None:
    key = EXPOSED[role]
    config = make_config(tmp_path, f"{key}=0.0.0.0:0", "tracker.origins=['127.0.0.1:9']",
                         "proxy.origin=127.0.0.1:9", "proxy.index=127.0.0.1:9")
    with pytest.raises(DaemonError) as refused:
        Daemon(config, [role])
    message = str(refused.value)
    assert key in message and "0.0.0.0" in message
    for fix in ("[cluster] secret", "[tls]", "cluster.insecure = true"):
        assert fix in message
    # The peer wire counts too.
    if role in ("origin", "agent"):
        with pytest.raises(DaemonError, match="swarm.listen"):
            Daemon(make_config(tmp_path, "swarm.listen=[::]:0"), [role])
    # A secret, or saying so, lets it start; loopback everywhere needs neither.
    Daemon(load_config(None, [f"{key}=0.0.0.0:0", f'cluster.secret="{SECRET}"', "tracker.origins=['127.0.0.1:9']"],
                       data_dir=str(tmp_path)), [role])
    Daemon(make_config(tmp_path, f"{key}=0.0.0.0:0", "cluster.insecure=true", "tracker.origins=['127.0.0.1:9']"),
           [role])
    Daemon(make_config(tmp_path, "tracker.origins=['127.0.0.1:9']"), [role])


def test_the_proxy_port_is_an_edge(tmp_path: Path) -> None:
    """The registry port is for clients outside the cluster: listening widely is what it is for."""
    Daemon(make_config(tmp_path, "proxy.listen=0.0.0.0:0", "proxy.origin=127.0.0.1:9", "proxy.index=127.0.0.1:9"),
           ["proxy"])


def test_the_cli_refuses_to_start_and_names_the_fix(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "swarmreg", "daemon", "--roles", "origin", "--data-dir",
                             str(tmp_path), "--set", "origin.listen=0.0.0.0:0", "--set", "swarm.listen=127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "origin.listen = 0.0.0.0:0" in result.stderr
    for fix in ("[cluster] secret", "[tls]", "cluster.insecure = true"):
        assert fix in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("blobs")), "it stopped before preparing anything"


async def test_cluster_insecure_starts_on_purpose(tmp_path: Path) -> None:
    process = DaemonProcess("open", ["origin", "index"], tmp_path / "open", stderr=subprocess.DEVNULL,
                            overrides=["origin.listen=0.0.0.0:0", "index.listen=0.0.0.0:0", "swarm.listen=127.0.0.1:0",
                                       "cluster.insecure=true", "shutdown_timeout=5"])
    try:
        ready = await process.start()
        assert ready["roles"]["origin"]["http"].startswith("0.0.0.0:")
    finally:
        assert await process.stop() == 0


# -- the secret stays secret -------------------------------------------------------------------

def test_config_show_redacts_the_secret(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "swarmreg", "config", "show", "--set",
                             f'cluster.secret="{SECRET}"'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    assert 'secret = "<redacted>"' in result.stdout
    assert SECRET not in repr(load_config(None, [f'cluster.secret="{SECRET}"']))


def test_cluster_keys_are_strict() -> None:
    with pytest.raises(ConfigError, match="cluster.insecure"):
        load_config(None, ['cluster.insecure="yes"'])
    with pytest.raises(ConfigError, match="cluster.bogus"):
        load_config(None, ["cluster.bogus=1"])



async def test_a_push_and_pull_with_the_secret_leave_it_out_of_the_logs(spawn: Any, tmp_path: Path) -> None:
    debug = ('log.level="debug"', 'log.format="json"', f'cluster.secret="{SECRET}"')
    herd = await spawn("herd", ["origin", "tracker", "index", "proxy"], *debug)
    agent = await spawn("agent", ["agent"], *debug, f"agent.tracker={herd.address('tracker', 'ws')}",
                        f"agent.index={herd.address('index', 'http')}")
    layers = [random_bytes(1 << 20, seed=8)]
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        _, manifest = await push_image(proxy, "secret/app", "1", layers)
    async with httpx.AsyncClient(base_url=f"http://{agent.address('agent', 'registry')}", timeout=60) as registry:
        assert (await registry.get("/v2/secret/app/manifests/1")).content == manifest
        assert (await registry.get(f"/v2/secret/app/blobs/{Digest.of(layers[0])}")).content == layers[0]
    await agent.stop()
    await herd.stop()
    for name in ("herd", "agent"):
        text = (tmp_path / f"{name}.log").read_text()
        assert '"level": "debug"' in text
        assert SECRET not in text, f"the cluster secret is in the {name} log"
