"""Addressing on the real daemons' registry ports, the proxy's and an agent's (issue 12, point 3).

Upstream images are put into the herd as pull-through records them (tests/registry/helpers.py),
with ``air_gapped`` on so that nothing here depends on reaching an upstream, then read through
the proxy and through an agent with containerd's ``?ns=``, in the in-path form, and as bare
names with ``default_registry``. Pushes into an upstream's namespace are refused and change
nothing; malformed input gets the envelope and the daemon serves on.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from swarmreg.index.client import IndexClient
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.proxy.helpers import DOCKER_MANIFEST, OCI_MANIFEST, digest_of, push_blob, push_image

from .helpers import Seeded, herd_of, seed_image

HUB = "docker.io/library/nginx"
LOCAL_REGISTRY = "127.0.0.1:5000"  # an upstream's name only: nothing listens there, nothing asks it
PORTS = ("proxy", "agent")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the spec's JSON error envelope with ``status`` (and ``code``); its error."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    errors = response.json()["errors"]
    assert len(errors) == 1 and errors[0]["message"], errors
    assert code is None or errors[0]["code"] == code, errors
    assert "Traceback" not in response.text and "/tmp" not in response.text
    return dict(errors[0])


@attrs.frozen
class Herd:
    herd: RunningDaemon
    agent: RunningDaemon

    def url(self, port: str) -> str:
        return self.herd.url("proxy") if port == "proxy" else self.agent.url("agent", "registry")

    @property
    def addresses(self) -> tuple[str, str]:
        return herd_of(self.herd.ready["roles"])


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *overrides: str,
                     agent_overrides: tuple[str, ...] | None = None) -> Herd:
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", "air_gapped=true", *overrides),
                              ["origin", "tracker", "index", "proxy"])
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", "air_gapped=true", f"agent.tracker={roles['tracker']['ws']}",
        f"agent.index={roles['index']['http']}", *(overrides if agent_overrides is None else agent_overrides)),
        ["agent"])
    return Herd(herd, agent)


@pytest.fixture
async def herd(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Herd]:
    yield await start_herd(nursery, tmp_path)


async def assert_serves(client: httpx.AsyncClient, path: str, image: Seeded, *, ns: str | None = None) -> None:
    """``path`` (``/v2/<name>``) answers ``image``: its manifest by tag and digest, its blobs (GET, HEAD, a range)."""
    params = {"ns": ns} if ns else {}
    for reference in ("1.27", image.digest):
        got = await client.get(f"{path}/manifests/{reference}", params=params)
        assert got.status_code == 200, (path, ns, got.text)
        assert got.content == image.manifest and got.headers["docker-content-digest"] == image.digest
        assert got.headers["content-type"] == DOCKER_MANIFEST
        head = await client.head(f"{path}/manifests/{reference}", params=params)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(image.manifest))
    for blob, data in image.blobs.items():
        got = await client.get(f"{path}/blobs/{blob}", params=params)
        assert got.status_code == 200 and got.content == data, (path, ns, got.text)
        head = await client.head(f"{path}/blobs/{blob}", params=params)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        ranged = await client.get(f"{path}/blobs/{blob}", params=params, headers={"Range": "bytes=2-5"})
        assert ranged.status_code == 206 and ranged.content == data[2:6]


async def test_ns_and_in_path_forms_read_upstream_repositories(herd: Herd) -> None:
    nginx = await seed_image(herd.addresses, HUB, ["1.27", "1.28", "latest"], "nginx")
    app = await seed_image(herd.addresses, f"{LOCAL_REGISTRY}/team/app", ["1.27"], "upstream app")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        _, own = await push_image(proxy, "team/app", "1.27", [b"swarmreg's own app"])
    for port in PORTS:
        async with httpx.AsyncClient(base_url=herd.url(port), timeout=60) as client:
            # containerd's mirror form: the path names the repository as the upstream does.
            for name, ns in [("nginx", "docker.io"), ("library/nginx", "docker.io"),
                             ("nginx", "registry-1.docker.io"), ("library/nginx", "index.docker.io")]:
                await assert_serves(client, f"/v2/{name}", nginx, ns=ns)
            # The in-path form, canonical or as docker names Docker Hub.
            for name in ["docker.io/nginx", "registry-1.docker.io/nginx", HUB, "index.docker.io/library/nginx"]:
                await assert_serves(client, f"/v2/{name}", nginx)
            await assert_serves(client, "/v2/team/app", app, ns=LOCAL_REGISTRY)
            await assert_serves(client, f"/v2/{LOCAL_REGISTRY}/team/app", app)
            # Without ns, team/app is swarmreg's own repository, another image.
            own_app = await client.get("/v2/team/app/manifests/1.27")
            assert own_app.content == own != app.manifest
            # ns is the upstream: the bare name's layer is not in Docker Hub's team/app.
            assert_error(await client.get("/v2/team/app/manifests/1.27", params={"ns": "docker.io"}), 404)


async def test_tag_lists_and_their_links_keep_the_addressing(herd: Herd) -> None:
    await seed_image(herd.addresses, HUB, ["a", "b", "c"], "nginx")
    for port in PORTS:
        async with httpx.AsyncClient(base_url=herd.url(port), timeout=60) as client:
            for path, params in [("/v2/nginx/tags/list", {"ns": "docker.io"}),
                                 ("/v2/library/nginx/tags/list", {"ns": "registry-1.docker.io"}),
                                 ("/v2/docker.io/nginx/tags/list", {}), (f"/v2/{HUB}/tags/list", {})]:
                whole = await client.get(path, params=params)
                assert whole.status_code == 200, whole.text
                name = path.removeprefix("/v2/").removesuffix("/tags/list")
                assert whole.json() == {"name": name, "tags": ["a", "b", "c"]}, "named as the client did"
                pages: list[list[str]] = []
                url: httpx.URL | None = httpx.URL(path, params={**params, "n": "2"})
                while url is not None:
                    page = await client.get(url)
                    assert page.status_code == 200, page.text
                    pages.append(page.json()["tags"])
                    link = page.headers.get("Link", "")
                    url = httpx.URL(link.partition(">")[0].removeprefix("<")) if link else None
                    if url is not None:  # the next page is asked the same way, ns and all
                        assert url.path == path and {k: v for k, v in url.params.items() if k == "ns"} == params, link
                assert pages == [["a", "b"], ["c"]], (port, path)


async def test_referrers_with_ns(herd: Herd) -> None:
    nginx = await seed_image(herd.addresses, HUB, ["1.27"], "nginx")
    signature = digest_of(b"a signature manifest")
    async with IndexClient(herd.addresses[1]) as index:
        await index.put_manifest(HUB, signature, media_type=OCI_MANIFEST, size=20,
                                 artifact_type="application/vnd.example.sig", subject=nginx.digest)
    for port in PORTS:
        async with httpx.AsyncClient(base_url=herd.url(port), timeout=60) as client:
            for path, params in [("/v2/nginx", {"ns": "docker.io"}), ("/v2/docker.io/nginx", {})]:
                got = await client.get(f"{path}/referrers/{nginx.digest}", params=params)
                assert got.status_code == 200, got.text
                assert [m["digest"] for m in got.json()["manifests"]] == [signature]
            # Another upstream's nginx has none.
            other = await client.get(f"/v2/nginx/referrers/{nginx.digest}", params={"ns": "ghcr.io"})
            assert other.status_code == 200 and other.json()["manifests"] == []


MALFORMED_NS = ["", "team", "a..b", "host.com:99999", "[::1]:5000", "https://docker.io", "docker.io/library",
                "x" * 300 + ".com", "dock er.io"]


async def test_malformed_addressing_gets_the_envelope_and_the_daemon_serves_on(herd: Herd) -> None:
    nginx = await seed_image(herd.addresses, HUB, ["1.27"], "nginx")
    blob = next(iter(nginx.blobs))
    for port in PORTS:
        async with httpx.AsyncClient(base_url=herd.url(port), timeout=60) as client:
            for ns in MALFORMED_NS:
                for path in ["/v2/nginx/manifests/1.27", f"/v2/nginx/blobs/{blob}", "/v2/nginx/tags/list",
                             f"/v2/nginx/referrers/{nginx.digest}"]:
                    for method in ("GET", "HEAD"):
                        response = await client.request(method, path, params={"ns": ns})
                        assert response.status_code == 400, (port, ns, path, response.text)
                        if method == "GET":
                            assert_error(response, 400, "NAME_INVALID")
            # Two different ns, and the ns a port would make invalid.
            assert_error(await client.get("/v2/nginx/manifests/1.27?ns=docker.io&ns=ghcr.io"), 400, "NAME_INVALID")
            assert (await client.get("/v2/nginx/manifests/1.27?ns=docker.io&ns=docker.io")).status_code == 200
            assert_error(await client.get(f"/v2/{LOCAL_REGISTRY}/app/manifests/1", params={"ns": "docker.io"}),
                         400, "NAME_INVALID")
            assert_error(await client.get("/v2/Docker.io/nginx/manifests/1.27"), 400, "NAME_INVALID")
            assert (await client.get("/v2/")).status_code == 200
            await assert_serves(client, "/v2/nginx", nginx, ns="docker.io")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        for method, path in [("POST", "/v2/nginx/blobs/uploads/"), ("PUT", "/v2/nginx/manifests/1"),
                             ("DELETE", "/v2/nginx/manifests/1.27"), ("DELETE", f"/v2/nginx/blobs/{blob}")]:
            for ns in MALFORMED_NS:
                assert_error(await proxy.request(method, path, params={"ns": ns}, content=b"{}"), 400, "NAME_INVALID")
        await assert_serves(proxy, "/v2/nginx", nginx, ns="docker.io")  # nothing was deleted


async def test_default_registry_serves_bare_names_swarmreg_lacks(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``default_registry = "docker.io"`` on the proxy and the agent: a bare name swarmreg holds
    is its own (even for a tag it lacks); one it does not hold is Docker Hub's."""
    herd = await start_herd(nursery, tmp_path, 'default_registry="docker.io"')
    plain = await start_daemon(nursery, make_config(  # an agent without default_registry
        tmp_path / "plain", "air_gapped=true", f"agent.tracker={herd.herd.ready['roles']['tracker']['ws']}",
        f"agent.index={herd.addresses[1]}"), ["agent"])
    alpine = await seed_image(herd.addresses, "docker.io/library/alpine", ["1.27"], "alpine")
    hub_app = await seed_image(herd.addresses, "docker.io/team/app", ["1.27", "v2"], "docker hub's team/app")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        _, own = await push_image(proxy, "team/app", "1.27", [b"swarmreg's own app"])
    for port in PORTS:
        async with httpx.AsyncClient(base_url=herd.url(port), timeout=60) as client:
            await assert_serves(client, "/v2/alpine", alpine)
            await assert_serves(client, "/v2/library/alpine", alpine)
            tags = await client.get("/v2/alpine/tags/list")
            assert tags.json() == {"name": "alpine", "tags": ["1.27"]}
            referrers = await client.get(f"/v2/alpine/referrers/{alpine.digest}")
            assert referrers.status_code == 200 and referrers.json()["manifests"] == []
            # team/app is swarmreg's: its own image, its own tags, never Docker Hub's team/app.
            assert (await client.get("/v2/team/app/manifests/1.27")).content == own
            assert_error(await client.get("/v2/team/app/manifests/v2"), 404, "MANIFEST_UNKNOWN")
            assert_error(await client.get(f"/v2/team/app/blobs/{next(iter(hub_app.blobs))}"), 404, "BLOB_UNKNOWN")
            assert (await client.get("/v2/team/app/tags/list")).json() == {"name": "team/app", "tags": ["1.27"]}
            # Explicitly addressed, Docker Hub's team/app is there.
            await assert_serves(client, "/v2/team/app", hub_app, ns="docker.io")
            assert_error(await client.get("/v2/nothing/here/manifests/1"), 404)
    async with httpx.AsyncClient(base_url=plain.url("agent", "registry"), timeout=60) as client:
        assert_error(await client.get("/v2/alpine/manifests/1.27"), 404, "MANIFEST_UNKNOWN")
        assert_error(await client.get("/v2/alpine/tags/list"), 404, "NAME_UNKNOWN")
        await assert_serves(client, "/v2/alpine", alpine, ns="docker.io")


async def test_pushes_into_an_upstream_namespace_are_refused(herd: Herd) -> None:
    nginx = await seed_image(herd.addresses, HUB, ["1.27"], "nginx")
    layer = next(iter(nginx.blobs))
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy, \
            IndexClient(herd.addresses[1]) as index:
        await push_image(proxy, "team/app", "v1", [b"own layer"])
        started = await proxy.post("/v2/team/app/blobs/uploads/")
        assert started.status_code == 202
        uid = started.headers["docker-upload-uuid"]
        data = b"would-be layer"
        manifest = nginx.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion": 2 ')
        attempts = [
            ("POST", f"/v2/{HUB}/blobs/uploads/", {}, b""),
            ("POST", f"/v2/{HUB}/blobs/uploads/", {"digest": digest_of(data)}, data),
            ("POST", "/v2/nginx/blobs/uploads/", {"ns": "docker.io"}, b""),
            ("POST", "/v2/docker.io/nginx/blobs/uploads/", {"mount": layer, "from": "team/app"}, b""),
            ("POST", f"/v2/{LOCAL_REGISTRY}/x/blobs/uploads/", {}, b""),
            ("PATCH", f"/v2/{HUB}/blobs/uploads/{uid}", {}, data),
            ("PUT", f"/v2/{HUB}/blobs/uploads/{uid}", {"digest": digest_of(data)}, data),
            ("PUT", f"/v2/{HUB}/manifests/evil", {}, manifest),
            ("PUT", "/v2/nginx/manifests/1.27", {"ns": "docker.io"}, manifest),
            ("PUT", f"/v2/{LOCAL_REGISTRY}/x/manifests/v1", {}, manifest),
            ("PUT", "/v2/localhost/x/manifests/v1", {}, manifest),
        ]
        for method, path, params, body in attempts:
            response = await proxy.request(method, path, params=params, content=body,
                                           headers={"Content-Type": DOCKER_MANIFEST})
            error = assert_error(response, 403, "DENIED")
            upstream = LOCAL_REGISTRY if LOCAL_REGISTRY in path else "localhost" if "localhost" in path else "docker.io"
            assert upstream in error["message"] and f"push to {upstream}" in error["message"], error
            assert error["detail"]["upstream"] == upstream
        # Nothing changed: no tag, no manifest, no link, and the local session is still open.
        assert await index.get_tag(HUB, "evil") is None and await index.get_tag(HUB, "1.27") == nginx.digest
        assert await index.blob_size(HUB, digest_of(data)) is None
        assert await index.blob_size(f"{LOCAL_REGISTRY}/x", digest_of(data)) is None
        assert (await proxy.get(f"/v2/team/app/blobs/uploads/{uid}")).status_code == 204
        # Mounting from an upstream's cache into swarmreg's own repository is a pull: allowed.
        mounted = await proxy.post("/v2/team/app/blobs/uploads/", params={"mount": layer, "from": "docker.io/nginx"})
        assert mounted.status_code == 201 and mounted.headers["location"] == f"/v2/team/app/blobs/{layer}"
        # Deletes evict from the cache.
        assert (await proxy.delete(f"/v2/{HUB}/manifests/1.27")).status_code == 202
        assert await index.get_tag(HUB, "1.27") is None
        assert (await proxy.delete(f"/v2/nginx/blobs/{layer}", params={"ns": "docker.io"})).status_code == 202
        assert await index.blob_size(HUB, layer) is None
        # A push into swarmreg's own repository works as before, Location and all.
        assert (await push_blob(proxy, "team/app", b"still works")) == digest_of(b"still works")


async def test_unreachable_or_impossible_upstream_names_get_clear_errors(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Upstream names a careless client sends on both ports, not air-gapped: a port nothing
    listens on is UPSTREAM_UNAVAILABLE naming it for a manifest *and* a blob (a blob was 502
    "index answered 503": the agent and proxy asked the index with a HEAD, whose answer has no
    envelope to relay); a port over 65535 or a DNS label over 63 characters is NAME_INVALID;
    a host IDNA refuses is UPSTREAM_UNAVAILABLE. Each of these was a 500 INTERNAL before."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    herd = await start_herd(nursery, tmp_path, "air_gapped=false")
    blob = "sha256:" + "0" * 64
    try:
        for where in PORTS:
            async with httpx.AsyncClient(base_url=herd.url(where), timeout=60) as client:
                with trio.fail_after(30):
                    for path in [f"/v2/127.0.0.1:{port}/x/manifests/v1", f"/v2/127.0.0.1:{port}/x/blobs/{blob}"]:
                        error = assert_error(await client.get(path), 503, "UPSTREAM_UNAVAILABLE")
                        assert f"127.0.0.1:{port}" in error["message"], (where, path, error)
                    error = assert_error(await client.get(f"/v2/x/blobs/{blob}", params={"ns": f"127.0.0.1:{port}"}),
                                         503, "UPSTREAM_UNAVAILABLE")
                    for path in ["/v2/127.0.0.1:99999/x/manifests/v1", f"/v2/127.0.0.1:99999/x/blobs/{blob}",
                                 "/v2/" + "a" * 64 + ".com/x/manifests/v1"]:
                        assert_error(await client.get(path), 400, "NAME_INVALID")
                    assert_error(await client.get("/v2/x/manifests/v1", params={"ns": "x." + "a" * 64 + ".com"}),
                                 400, "NAME_INVALID")
                    assert_error(await client.get("/v2/xn--n3h.com/x/manifests/v1"), 503, "UPSTREAM_UNAVAILABLE")
                assert (await client.get("/v2/")).status_code == 200
    finally:
        await herd.agent.stop()
        await herd.herd.stop()
