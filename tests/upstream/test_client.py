"""The upstream client against real registries: Debian's docker-registry (anonymous, htpasswd,
TLS, mTLS) and our own proxy in token mode (Docker's Bearer flow), plus one that never answers."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from swarmreg.config import RegistryConfig, UpstreamAuthConfig, UpstreamTlsConfig, load_config
from swarmreg.errors import (
    BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    UPSTREAM_ERROR,
    UPSTREAM_UNAVAILABLE,
    SwarmregError,
)
from swarmreg.registry.auth import hash_password
from swarmreg.upstream.client import MAX_ANONYMOUS, UpstreamClient, Upstreams
from tests.conftest import PORT_ZERO, start_daemon
from tests.proxy.helpers import DOCKER_MANIFEST, RegistryAuth, digest_of, image_manifest
from tests.upstream.lying import LyingUpstream
from tests.upstream.registries import blob_path, docker_registry

LAYERS = [b"layer one " * 300_000, b"second layer"]  # the first spans three 1 MiB chunks
PASSWORD = "upstream-secret-pw"


async def push(base_url: str, repository: str, *, auth: httpx.Auth | None = None,
               verify: ssl.SSLContext | bool = True) -> tuple[str, bytes]:
    """Config, layers and manifest under tag v1, each blob in a POST then PUT ?digest= (the
    monolithic POST ?digest= that push_image uses is one docker-registry 2.8 does not take)."""
    async with httpx.AsyncClient(base_url=base_url, auth=auth, verify=verify, timeout=30) as client:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [digest_of(layer) for layer in LAYERS]}}).encode()
        for blob in (config, *LAYERS):
            started = await client.post(f"/v2/{repository}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = httpx.URL(started.headers["Location"])  # keeps its _state query
            done = await client.put(location.copy_merge_params({"digest": digest_of(blob)}), content=blob)
            assert done.status_code == 201, done.text
        manifest = image_manifest(config, LAYERS)
        response = await client.put(f"/v2/{repository}/manifests/v1", content=manifest,
                                    headers={"Content-Type": DOCKER_MANIFEST})
        assert response.status_code == 201, response.text
        return response.headers["Docker-Content-Digest"], manifest


async def check_reads(upstream: UpstreamClient, repository: str, digest: str, manifest: bytes) -> None:
    """resolve, get_manifest, blob_size and blob_stream give back exactly what was pushed."""
    resolved = await upstream.resolve(repository, "v1")
    assert (resolved.digest, resolved.media_type, resolved.data) == (digest, DOCKER_MANIFEST, manifest)
    assert (await upstream.get_manifest(repository, digest)).data == manifest
    head = await upstream.head_manifest(repository, "v1")
    assert (head.digest, head.size) == (digest, len(manifest))
    config_descriptor = json.loads(manifest)["config"]
    for layer_digest, layer in [(digest_of(layer), layer) for layer in LAYERS] + [
            (config_descriptor["digest"], None)]:
        chunks = [chunk async for chunk in upstream.blob_stream(repository, layer_digest)]
        data = b"".join(chunks)
        assert digest_of(data) == layer_digest and (layer is None or data == layer)
        assert all(len(chunk) <= 1 << 20 for chunk in chunks)
        assert await upstream.blob_size(repository, layer_digest) == len(data)
    with pytest.raises(SwarmregError) as caught:
        await upstream.get_manifest(repository, "missing")
    assert caught.value.code is MANIFEST_UNKNOWN and upstream.name in caught.value.message
    with pytest.raises(SwarmregError) as caught:
        await upstream.blob_size(repository, digest_of(b"absent"))
    assert caught.value.code is BLOB_UNKNOWN


async def test_anonymous_http(tmp_path: Path):
    with docker_registry(tmp_path) as port:
        digest, manifest = await push(f"http://127.0.0.1:{port}", "team/app")
        async with UpstreamClient(RegistryConfig(name=f"127.0.0.1:{port}", scheme="http")) as upstream:
            await check_reads(upstream, "team/app", digest, manifest)


async def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path):
    with docker_registry(tmp_path) as port:
        await push(f"http://127.0.0.1:{port}", "team/app")
        layer = digest_of(LAYERS[0])
        stored = blob_path(port, layer)
        stored.write_bytes(b"X" + stored.read_bytes()[1:])  # same size, other bytes
        async with UpstreamClient(RegistryConfig(name=f"127.0.0.1:{port}", scheme="http")) as upstream:
            received = []
            with pytest.raises(SwarmregError) as caught:
                async for chunk in upstream.blob_stream("team/app", layer):
                    received.append(chunk)
            assert caught.value.code is UPSTREAM_ERROR and "does not match its digest" in caught.value.message
            # The last chunk is held back: a consumer storing chunks never has the whole blob.
            assert 0 < sum(map(len, received)) < len(LAYERS[0])


async def test_basic_auth_with_htpasswd(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    with docker_registry(tmp_path, users={"puller": PASSWORD}) as port:
        digest, manifest = await push(f"http://127.0.0.1:{port}", "team/app", auth=httpx.BasicAuth("puller", PASSWORD))
        name = f"127.0.0.1:{port}"
        auth = UpstreamAuthConfig(user="puller", password=PASSWORD)
        async with UpstreamClient(RegistryConfig(name=name, scheme="http", auth=auth)) as upstream:
            await check_reads(upstream, "team/app", digest, manifest)
        # No credentials, or wrong ones: a clear error naming the upstream, never the password.
        for config in (RegistryConfig(name=name, scheme="http"),
                       RegistryConfig(name=name, scheme="http", auth=UpstreamAuthConfig(user="puller",
                                                                                      password="wrong-pw"))):
            async with UpstreamClient(config) as upstream:
                with pytest.raises(SwarmregError) as caught:
                    await upstream.resolve("team/app", "v1")
            assert caught.value.code is UPSTREAM_ERROR and name in caught.value.message
            assert "wrong-pw" not in caught.value.message and PASSWORD not in caught.value.message
    assert caplog.records and PASSWORD not in caplog.text and "wrong-pw" not in caplog.text


def certificates(tmp_path: Path) -> tuple[trustme.CA, Path, Path, Path, Path, Path]:
    """A CA; the server's cert/key for 127.0.0.1; a client cert/key from the same CA."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("puller@example")
    files = []
    for name, issued in (("server", server), ("client", client)):
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        files += [cert, key]
    return ca, ca_file, files[0], files[1], files[2], files[3]


async def test_tls_with_a_ca_and_insecure_skip_verify(tmp_path: Path):
    ca, ca_file, cert, key, _, _ = certificates(tmp_path)
    with docker_registry(tmp_path, cert=str(cert), key=str(key)) as port:
        context = ssl.create_default_context(cafile=str(ca_file))
        digest, manifest = await push(f"https://127.0.0.1:{port}", "team/app", verify=context)
        name = f"127.0.0.1:{port}"
        async with UpstreamClient(RegistryConfig(name=name, tls=UpstreamTlsConfig(ca=str(ca_file)))) as upstream:
            await check_reads(upstream, "team/app", digest, manifest)
        skip = UpstreamTlsConfig(insecure_skip_verify=True)
        async with UpstreamClient(RegistryConfig(name=name, tls=skip)) as upstream:
            assert (await upstream.resolve("team/app", "v1")).data == manifest
        # The system's roots do not know our CA: refused, and said so.
        async with UpstreamClient(RegistryConfig(name=name, connect_timeout=5)) as upstream:
            with pytest.raises(SwarmregError) as caught:
                await upstream.resolve("team/app", "v1")
        assert caught.value.code is UPSTREAM_UNAVAILABLE and name in caught.value.message


async def test_mtls_client_certificate(tmp_path: Path):
    ca, ca_file, cert, key, client_cert, client_key = certificates(tmp_path)
    with docker_registry(tmp_path, cert=str(cert), key=str(key), client_ca=str(ca_file)) as port:
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(client_cert), str(client_key))
        digest, manifest = await push(f"https://127.0.0.1:{port}", "team/app", verify=context)
        name = f"127.0.0.1:{port}"
        tls = UpstreamTlsConfig(ca=str(ca_file), cert=str(client_cert), key=str(client_key))
        async with UpstreamClient(RegistryConfig(name=name, tls=tls)) as upstream:
            await check_reads(upstream, "team/app", digest, manifest)
        # Without the client certificate the handshake is refused.
        async with UpstreamClient(RegistryConfig(name=name, tls=UpstreamTlsConfig(ca=str(ca_file)))) as upstream:
            with pytest.raises(SwarmregError) as caught:
                await upstream.resolve("team/app", "v1")
        assert caught.value.code is UPSTREAM_UNAVAILABLE and name in caught.value.message


async def start_token_proxy(nursery: trio.Nursery, tmp_path: Path, token_ttl: float) -> str:
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(
        f'[proxy]\nauth = "token"\ntoken_ttl = {token_ttl}\n\n[proxy.users]\nalice = "{hash_password(PASSWORD)}"\n\n'
        '[[proxy.access]]\nuser = "alice"\nrepositories = ".*"\nactions = ["pull", "push", "delete"]\n\n'
        '[[proxy.access]]\nuser = "anonymous"\nrepositories = "public/.*"\nactions = ["pull"]\n')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, ["origin", "tracker", "index", "proxy"])
    return herd.url("proxy")


@pytest.mark.timeout(120)
async def test_bearer_token_flow_reuses_tokens_until_expiry(nursery: trio.Nursery, tmp_path: Path):
    url = await start_token_proxy(nursery, tmp_path, token_ttl=4.0)
    digest, manifest = await push(url, "team/app", auth=RegistryAuth("alice", PASSWORD))
    public_digest, public_manifest = await push(url, "public/app", auth=RegistryAuth("alice", PASSWORD))
    name = url.removeprefix("http://")
    auth = UpstreamAuthConfig(user="alice", password=PASSWORD)
    async with UpstreamClient(RegistryConfig(name=name, scheme="http", auth=auth)) as upstream:
        await check_reads(upstream, "team/app", digest, manifest)
        assert upstream.token_requests == 1  # one token, reused by every request on the repository
        await upstream.resolve("public/app", "v1")
        assert upstream.token_requests == 2  # another scope, another token
        await trio.sleep(4.0)  # past expires_in (minus the margin): a fresh one
        assert (await upstream.resolve("team/app", "v1")).data == manifest
        assert upstream.token_requests == 3
    # Anonymous: the realm gives a token for what anonymous may pull, and refuses the rest.
    async with UpstreamClient(RegistryConfig(name=name, scheme="http")) as upstream:
        assert (await upstream.resolve("public/app", "v1")).digest == public_digest
        assert upstream.token_requests == 1
        with pytest.raises(SwarmregError) as caught:
            await upstream.resolve("team/app", "v1")
        assert caught.value.code is UPSTREAM_ERROR and name in caught.value.message
    # Wrong password: the realm refuses it, and the message does not carry it.
    wrong = UpstreamAuthConfig(user="alice", password="not-the-pw")
    async with UpstreamClient(RegistryConfig(name=name, scheme="http", auth=wrong)) as upstream:
        with pytest.raises(SwarmregError) as caught:
            await upstream.resolve("team/app", "v1")
        assert caught.value.code is UPSTREAM_ERROR and "not-the-pw" not in caught.value.message


@pytest.mark.timeout(30)
async def test_a_hanging_upstream_times_out():
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    config = RegistryConfig(name=f"127.0.0.1:{port}", scheme="http", connect_timeout=1, read_timeout=0.5)
    held: list[trio.SocketStream] = []

    async def accept_and_say_nothing() -> None:
        while True:
            held.append(await listener.accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_say_nothing)
        async with UpstreamClient(config) as upstream:
            with trio.fail_after(10), pytest.raises(SwarmregError) as caught:
                await upstream.resolve("team/app", "v1")
        nursery.cancel_scope.cancel()
    assert held, "the client connected"
    assert caught.value.code is UPSTREAM_UNAVAILABLE
    assert f"upstream 127.0.0.1:{port}" in caught.value.message and "read_timeout" in caught.value.message
    # Nothing listening at all: refused at once, as unavailable.
    await listener.aclose()
    for stream in held:
        await stream.aclose()
    async with UpstreamClient(config) as upstream:
        with trio.fail_after(10), pytest.raises(SwarmregError) as caught:
            await upstream.blob_size("team/app", digest_of(b"x"))
    assert caught.value.code is UPSTREAM_UNAVAILABLE and "cannot connect" in caught.value.message


async def test_blob_stream_without_verify_passes_the_bytes_as_they_come(tmp_path: Path):
    """verify=False is for a consumer that hashes the bytes itself (the origin): a blob that does
    not match its digest arrives whole and unchecked, and the consumer's own check refuses it."""
    with docker_registry(tmp_path) as port:
        await push(f"http://127.0.0.1:{port}", "team/app")
        layer = digest_of(LAYERS[0])
        stored = blob_path(port, layer)
        stored.write_bytes(b"X" + stored.read_bytes()[1:])
        async with UpstreamClient(RegistryConfig(name=f"127.0.0.1:{port}", scheme="http")) as upstream:
            received = b"".join([chunk async for chunk in upstream.blob_stream("team/app", layer, verify=False)])
    assert received == b"X" + LAYERS[0][1:] and digest_of(received) != layer


async def test_a_host_name_idna_refuses_is_unavailable_not_a_crash():
    # xn--n3h.com passes the host[:port] check but IDNA refuses it (U+2603): the request was an
    # unhandled idna error, a 500 INTERNAL on the registry ports.
    for name in ("xn--n3h.com", "xn--n3h.example:5000"):
        async with UpstreamClient(RegistryConfig(name=name)) as upstream:
            with trio.fail_after(10), pytest.raises(SwarmregError) as raised:
                await upstream.head_manifest("x", "latest")
        assert raised.value.code is UPSTREAM_UNAVAILABLE, name
        assert name in raised.value.message


async def test_a_port_out_of_range_is_name_invalid():
    async with Upstreams() as upstreams:
        with pytest.raises(SwarmregError) as raised:
            upstreams.get("127.0.0.1:99999")
        assert raised.value.code is NAME_INVALID


async def test_anonymous_upstreams_are_bounded_and_share_the_system_roots():
    """Every ?ns= name an anonymous client sends got its own UpstreamClient, kept for good, each
    with its own SSL context (~850 KB of system roots): 3000 names took a herd from 115 MB to 2.6 GB."""
    configured = RegistryConfig(name="registry.example.com", tls=UpstreamTlsConfig(insecure_skip_verify=True))
    async with Upstreams([configured]) as upstreams:
        first = upstreams.get("h0.invalid")
        clients = [upstreams.get(f"h{i}.invalid") for i in range(3 * MAX_ANONYMOUS)]
        assert upstreams.get("registry.example.com") is upstreams.get("registry.example.com")  # configured: kept
        assert len(upstreams._anonymous) == MAX_ANONYMOUS
        assert upstreams.get(f"h{3 * MAX_ANONYMOUS - 1}.invalid") is clients[-1]  # recent ones are reused
        assert upstreams.get("h0.invalid") is not first  # the oldest were dropped
        contexts = {id(client._http._transport._pool._ssl_context) for client in clients}
        assert len(contexts) == 1


async def test_a_token_realm_that_floods_is_refused_not_read_whole(nursery: trio.Nursery) -> None:
    flooding = LyingUpstream(b"blob", "token-flood")
    await nursery.start(flooding.serve)
    async with UpstreamClient(RegistryConfig(name=f"127.0.0.1:{flooding.port}", scheme="http")) as upstream:
        with pytest.raises(SwarmregError) as refused:
            await upstream.get_manifest("team/app", "v1")
    assert refused.value.code is UPSTREAM_ERROR and "token response is larger than" in refused.value.message
