"""Replication across clusters through real daemons: cluster A (origin, index, proxy) with an
[[index.replicate]] rule for ``team/.*`` naming cluster B's proxy; pushes to A appear in B, byte
for byte; order per repository; a remote down, then up; bad credentials; the token flow."""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from swarmreg.config import Address, ReplicateRule, UpstreamTlsConfig
from swarmreg.daemon import Daemon, DaemonError
from swarmreg.devcluster import make_dev_certs, tls_overrides
from swarmreg.errors import SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.index.remote import RemoteRegistry
from swarmreg.index.replicator import retry_delay
from swarmreg.registry.auth import hash_password
from tests.conftest import RunningDaemon, make_config, random_bytes, start_daemon
from tests.gc.helpers import collect
from tests.proxy.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryAuth,
    digest_of,
    push_blob,
    push_image,
)
from tests.replication.helpers import (
    HERD,
    blob_at,
    fixed_ports,
    listen_url,
    manifest_at,
    pending,
    queue,
    rule,
    wait_for_tag,
    wait_until_drained,
)
from tests.replication.hostile import HostileRemote, SlowRelay

pytestmark = pytest.mark.slow


async def cluster(nursery: trio.Nursery, data_dir: Path, *overrides: str) -> RunningDaemon:
    return await start_daemon(nursery, make_config(data_dir, *overrides), HERD)


async def push(daemon: RunningDaemon, repository: str, tag: str, layers: list[bytes]) -> tuple[str, bytes]:
    async with httpx.AsyncClient(base_url=daemon.url("proxy"), timeout=30) as client:
        return await push_image(client, repository, tag, layers)


async def test_a_tag_pushed_to_a_appears_in_b_byte_for_byte_and_other_repositories_stay(
        nursery: trio.Nursery, tmp_path: Path, index_database: str) -> None:
    b = await cluster(nursery, tmp_path / "b")
    a = await cluster(nursery, tmp_path / "a", rule(b.url("proxy")), f"index.database={index_database}")
    layers = [b"first layer " * 1000, bytes(range(256)) * 4000]
    digest, manifest = await push(a, "team/app", "v1", layers)
    other, _ = await push(a, "other/app", "v1", [b"not for b"])
    assert await wait_for_tag(b.url("proxy"), "team/app", "v1", digest) == manifest
    for layer in layers:
        pulled = await blob_at(b.url("proxy"), "team/app", digest_of(layer))
        assert (pulled.status_code, pulled.content) == (200, layer)
    await wait_until_drained(a.url("index"))
    assert (await manifest_at(b.url("proxy"), "other/app", "v1")).status_code == 404
    assert (await manifest_at(b.url("proxy"), "other/app", other)).status_code == 404
    status = await queue(a.url("index"))
    assert [(r["remote"], r["configured"], r["pending"]) for r in status["remotes"]] == [(b.url("proxy"), True, 0)]


async def test_a_tag_moved_ends_at_its_last_digest_and_an_index_brings_its_children(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    b = await cluster(nursery, tmp_path / "b")
    a = await cluster(nursery, tmp_path / "a", rule(b.url("proxy")))
    first, _ = await push(a, "team/app", "v1", [b"one"])
    await push(a, "team/app", "v2", [b"two"])
    last, manifest = await push(a, "team/app", "v1", [b"three"])  # v1 moved
    assert await wait_for_tag(b.url("proxy"), "team/app", "v1", last) == manifest
    await wait_for_tag(b.url("proxy"), "team/app", "v2", (await push(a, "team/app", "v2", [b"two"]))[0])

    # An image index: its children (pushed by digest only) and their blobs go first.
    async with httpx.AsyncClient(base_url=a.url("proxy"), timeout=30) as client:
        children = []
        for arch in ("amd64", "arm64"):
            config = json.dumps({"architecture": arch, "os": "linux"}).encode()
            layer = f"layer for {arch}".encode() * 100
            for blob in (config, layer):
                await push_blob(client, "team/multi", blob)
            child = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                           "digest": digest_of(config), "size": len(config)},
                                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                            "digest": digest_of(layer), "size": len(layer)}]}).encode()
            put = await client.put(f"/v2/team/multi/manifests/{digest_of(child)}", content=child,
                                   headers={"Content-Type": OCI_MANIFEST})
            assert put.status_code == 201, put.text
            children.append((child, arch, layer))
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest_of(child), "size": len(child),
             "platform": {"architecture": arch, "os": "linux"}} for child, arch, _ in children]}).encode()
        put = await client.put("/v2/team/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
    assert await wait_for_tag(b.url("proxy"), "team/multi", "latest", digest_of(index)) == index
    for child, _arch, layer in children:
        assert (await manifest_at(b.url("proxy"), "team/multi", digest_of(child))).content == child
        assert (await blob_at(b.url("proxy"), "team/multi", digest_of(layer))).content == layer
    assert first != last


async def test_a_remote_that_is_down_keeps_the_queue_with_its_errors_until_it_comes_up(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    ports = fixed_ports(HERD)
    remote = listen_url(ports)
    a = await cluster(nursery, tmp_path / "a", rule(remote))
    pushed = [await push(a, "team/app", f"v{n}", [f"layer {n}".encode()]) for n in range(3)]
    with trio.fail_after(30):
        while True:
            [queued] = (await queue(a.url("index")))["remotes"]
            if queued["pending"] == 3 and queued["queues"][0]["attempts"] >= 2:
                break
            await trio.sleep(0.2)
    head = queued["queues"][0]
    assert head["tag"] == "v0" and head["pending"] == 3
    assert remote in head["last_error"] and "ConnectError" in head["last_error"], head["last_error"]
    # The command line shows the same.
    done = await trio.run_process([sys.executable, "-m", "swarmreg", "replication", "status", "--index",
                                   a.url("index")], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert remote in text and "team/app" in text and "ConnectError" in text and "v0@" in text, text

    b = await cluster(nursery, tmp_path / "b", *ports)
    for n, (digest, manifest) in enumerate(pushed):
        assert await wait_for_tag(b.url("proxy"), "team/app", f"v{n}", digest) == manifest
    await wait_until_drained(a.url("index"))


@pytest.mark.parametrize("auth", ["basic", "token"])
async def test_bad_credentials_are_a_clear_error_retried_and_a_restart_with_good_ones_sends_everything(
        nursery: trio.Nursery, tmp_path: Path, auth: str) -> None:
    users = f'proxy.users={{ci = "{hash_password("right")}"}}'
    b = await cluster(nursery, tmp_path / "b", users, f"proxy.auth={auth}")
    wrong = (rule(b.url("proxy"), username="ci", password="wrong"),)
    a = await cluster(nursery, tmp_path / "a", *wrong)
    digest, manifest = await push(a, "team/app", "v1", [b"secret layer"])
    with trio.fail_after(30):
        while True:
            [queued] = (await queue(a.url("index")))["remotes"]
            if queued["queues"] and queued["queues"][0]["attempts"] >= 3:
                break
            await trio.sleep(0.2)
    error = queued["queues"][0]["last_error"]
    assert "token realm answered 401" in error or "refused the credentials" in error, error
    assert "wrong" not in error
    await a.stop()
    a = await cluster(nursery, tmp_path / "a", rule(b.url("proxy"), username="ci", password="right"))
    async with httpx.AsyncClient(base_url=b.url("proxy"), auth=RegistryAuth("ci", "right"), timeout=30) as reader:
        with trio.fail_after(30):
            while (answer := await reader.get("/v2/team/app/manifests/v1",
                                              headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
                                              )).status_code != 200:
                await trio.sleep(0.2)
        assert (answer.content, answer.headers["docker-content-digest"]) == (manifest, digest)
    await wait_until_drained(a.url("index"))
    assert await pending(a.url("index")) == 0


@pytest.mark.parametrize("mode", ["errors", "hang", "trickle", "huge", "token-flood"])
async def test_a_hostile_remote_keeps_its_entries_with_a_clear_error_and_harms_no_other_remote(
        nursery: trio.Nursery, tmp_path: Path, mode: str) -> None:
    hostile = HostileRemote(mode)
    await nursery.start(hostile.serve)
    b = await cluster(nursery, tmp_path / "b")
    rules = ("index.replicate=[" + rule(f"http://127.0.0.1:{hostile.port}", timeout=2).partition("=[")[2][:-1]
             + ", " + rule(b.url("proxy")).partition("=[")[2])
    a = await cluster(nursery, tmp_path / "a", rules)
    digest, manifest = await push(a, "team/app", "v1", [b"a layer for both remotes"])
    assert await wait_for_tag(b.url("proxy"), "team/app", "v1", digest) == manifest, "the good remote is not held up"
    with trio.fail_after(60):
        while True:
            remotes = {r["remote"]: r for r in (await queue(a.url("index")))["remotes"]}
            bad = remotes[f"http://127.0.0.1:{hostile.port}"]
            if bad["queues"] and bad["queues"][0]["attempts"] >= 2:
                break
            await trio.sleep(0.2)
    error = bad["queues"][0]["last_error"]
    expected = {"errors": "answered 500", "hang": "no answer within 2 s",
                "trickle": "no answer within 2 s", "huge": "answered 400", "token-flood": "larger than"}[mode]
    assert expected in error, error
    assert len(error) < 1000 and "Traceback" not in error
    if mode == "huge":
        assert hostile.sent < 16 << 20, f"the replicator read {hostile.sent} bytes of an error"
    assert remotes[b.url("proxy")]["pending"] == 0
    async with httpx.AsyncClient(base_url=a.url("index")) as index:
        assert (await index.get("/health")).status_code == 200


async def wait_for_error(index: str, text: str, attempts: int = 2) -> dict[str, Any]:
    """The head of the first queue once it failed ``attempts`` times with ``text`` in its error."""
    with trio.fail_after(60):
        while True:
            for remote in (await queue(index))["remotes"]:
                for head in remote["queues"]:
                    if head["attempts"] >= attempts and text in (head["last_error"] or ""):
                        return head
            await trio.sleep(0.2)


async def test_a_blob_lost_here_keeps_its_tag_queued_until_the_tag_goes(nursery: trio.Nursery, tmp_path: Path) -> None:
    ports = fixed_ports(HERD)
    a = await cluster(nursery, tmp_path / "a", rule(listen_url(ports)))
    lost = b"a layer that the origin loses"
    await push(a, "team/app", "v1", [lost])
    b = await cluster(nursery, tmp_path / "b", *ports)
    # The layer vanishes from the store and the backend (a collection gone wrong, a lost disk).
    for path in [*(tmp_path / "a").glob(f"blobs/sha256/*/{digest_of(lost)[7:]}"),
                 *(tmp_path / "a").glob(f"backend/blobs/sha256/*/{digest_of(lost)[7:]}")]:
        path.unlink()
    head = await wait_for_error(a.url("index"), f"blob {digest_of(lost)} of team/app cannot be read")
    assert head["tag"] == "v1"
    # The repository's next tag waits behind it (order); deleting the stuck tag lets it through.
    later, manifest = await push(a, "team/app", "v2", [b"a layer that stays"])
    assert (await pending(a.url("index"))) == 2
    async with httpx.AsyncClient(base_url=a.url("proxy")) as client:
        assert (await client.delete("/v2/team/app/manifests/v1")).status_code == 202
    assert await wait_for_tag(b.url("proxy"), "team/app", "v2", later) == manifest
    await wait_until_drained(a.url("index"))
    assert (await manifest_at(b.url("proxy"), "team/app", "v1")).status_code == 404


async def test_a_tag_deleted_and_collected_before_it_is_sent_is_dropped(nursery: trio.Nursery, tmp_path: Path) -> None:
    ports = fixed_ports(HERD)
    a = await cluster(nursery, tmp_path / "a", rule(listen_url(ports)), "gc.grace=0")
    digest, _ = await push(a, "team/app", "v1", [b"pushed, then deleted"])
    async with httpx.AsyncClient(base_url=a.url("proxy"), timeout=60) as client:
        assert (await client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202
    await collect(a)
    b = await cluster(nursery, tmp_path / "b", *ports)
    await wait_until_drained(a.url("index"))
    assert (await manifest_at(b.url("proxy"), "team/app", "v1")).status_code == 404
    assert (await manifest_at(b.url("proxy"), "team/app", digest)).status_code == 404


async def test_over_the_cluster_tls_the_remote_proxy_takes_this_nodes_certificate(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_dev_certs(certs, {"a": HERD, "b": HERD})
    b_ports = fixed_ports(HERD)
    port = listen_url(b_ports).rpartition(":")[2]
    # B's registry port wants a client certificate from the CA both clusters share.
    b = await cluster(nursery, tmp_path / "b", *b_ports, *tls_overrides(certs, "b"), f'proxy.tls.cert="{certs}/b.pem"',
                      f'proxy.tls.key="{certs}/b.key"', 'proxy.tls.client_auth="verify"',
                      f'proxy.tls.ca="{certs}/ca.pem"')
    remote = f"https://127.0.0.1:{port}"
    a = await cluster(nursery, tmp_path / "a", *tls_overrides(certs, "a"), rule(remote, cluster_tls=True))
    context = ssl.create_default_context(cafile=certs / "ca.pem")
    context.load_cert_chain(certs / "a.pem", certs / "a.key")
    async with httpx.AsyncClient(base_url=a.url("proxy"), timeout=30) as client:  # the registry port is http
        digest, manifest = await push_image(client, "team/app", "v1", [b"over mutual TLS"])
    async with httpx.AsyncClient(base_url=remote, verify=context, timeout=30) as reader:
        with trio.fail_after(30):
            while (answer := await reader.get("/v2/team/app/manifests/v1", headers={
                    "Accept": "application/vnd.docker.distribution.manifest.v2+json"})).status_code != 200:
                await trio.sleep(0.2)
    assert (answer.content, answer.headers["docker-content-digest"]) == (manifest, digest)
    async with IndexClient(Address.parse(a.ready["roles"]["index"]["http"]), tls=context) as index:
        with trio.fail_after(30):
            while any(remote["pending"] for remote in (await index.replication_status())["remotes"]):
                await trio.sleep(0.2)
    # Without a client certificate (the CA alone, in the rule's own [tls]) the remote refuses.
    alone = ReplicateRule(repository=".*", remote=remote, tls=UpstreamTlsConfig(ca=str(certs / "ca.pem")))
    async with RemoteRegistry(alone) as registry:
        with pytest.raises(SwarmregError) as refused:
            await registry.check()
    assert remote in refused.value.message and "GET /v2/" in refused.value.message
    assert b.ready


async def test_two_index_nodes_on_one_postgresql_database_share_the_queue(
        nursery: trio.Nursery, tmp_path: Path, postgres_database: str, caplog: pytest.LogCaptureFixture) -> None:
    b = await cluster(nursery, tmp_path / "b")
    shared = (rule(b.url("proxy"), repository="team/.*"), f"index.database={postgres_database}")
    a1 = await cluster(nursery, tmp_path / "a1", *shared)
    a2 = await start_daemon(nursery, make_config(tmp_path / "a2", *shared,
                                                 f"index.origin={a1.ready['roles']['origin']['http']}"), ["index"])
    # A second proxy writes through the second index node (and the first node's origin).
    proxy2 = await start_daemon(nursery, make_config(
        tmp_path / "proxy2", f"proxy.index={a2.ready['roles']['index']['http']}",
        f"proxy.origin={a1.ready['roles']['origin']['http']}"), ["proxy"])
    pushed = []
    for n in range(12):
        through = a1 if n % 2 else proxy2
        repository = f"team/app{n % 4}"
        digest, manifest = await push(through, repository, f"v{n}", [f"layer {n}".encode() * 1000])
        pushed.append((repository, f"v{n}", digest, manifest))
    for repository, tag, digest, manifest in pushed:
        assert await wait_for_tag(b.url("proxy"), repository, tag, digest) == manifest
    await wait_until_drained(a2.url("index"))
    assert not [r for r in caplog.records if "lease was lost" in r.getMessage() or r.levelname == "ERROR"]


async def test_an_index_url_for_a_remote_is_a_clear_error_and_an_index_without_origins_does_not_start(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    b = await cluster(nursery, tmp_path / "b")
    a = await cluster(nursery, tmp_path / "a", rule(b.url("index")))
    await push(a, "team/app", "v1", [b"for the wrong port"])
    head = await wait_for_error(a.url("index"), "not the Registry V2 API")
    assert "GET /v2/ answered 404" in head["last_error"] and "proxy" in head["last_error"]
    with pytest.raises(DaemonError) as refused:
        Daemon(make_config(tmp_path / "index", rule(b.url("proxy"))), ["index"])
    assert "[[index.replicate]]" in str(refused.value) and "index.origin" in str(refused.value)


async def test_a_slow_remote_that_answers_within_the_timeout_gets_everything(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    b = await cluster(nursery, tmp_path / "b")
    relay = SlowRelay(int(b.ready["roles"]["proxy"]["http"].rpartition(":")[2]), delay=0.1)
    await nursery.start(relay.serve)
    # 64 KiB every 0.1 s: a 2 MiB layer takes some 3 s, more than the timeout of a request.
    a = await cluster(nursery, tmp_path / "a", rule(f"http://127.0.0.1:{relay.port}", timeout=2))
    digest, manifest = await push(a, "team/app", "v1", [random_bytes(2 << 20), b"a small one"])
    assert await wait_for_tag(b.url("proxy"), "team/app", "v1", digest) == manifest
    await wait_until_drained(a.url("index"))


def test_retries_back_off_doubling_up_to_the_rules_cap() -> None:
    delays = [retry_delay(attempts, 60.0) for attempts in range(1, 10)]
    for attempts, delay in enumerate(delays, 1):
        assert 0.8 * min(60.0, 2.0 ** (attempts - 1)) <= delay <= min(60.0, 2.0 ** (attempts - 1))
    assert retry_delay(10_000, 300.0) <= 300.0
