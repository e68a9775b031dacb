"""The index's HTTP API through a real daemon (on SQLite, then on PostgreSQL): IndexClient, and raw
httpx for statuses and envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from quart_trio import QuartTrio

from swarmreg.config import Address, HttpConfig, is_postgres_url
from swarmreg.digest import Digest
from swarmreg.errors import (
    BAD_GATEWAY,
    BAD_REQUEST,
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    NAME_UNKNOWN,
    TAG_INVALID,
    UNAVAILABLE,
    SwarmregError,
)
from swarmreg.http.serve import serve_http
from swarmreg.index.client import IndexClient
from swarmreg.oci.manifest import MAX_MANIFEST_SIZE
from tests.conftest import RunningDaemon, free_port, make_config, start_daemon

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.example.signature"


def digest(n: object) -> str:
    return str(Digest.of(str(n).encode()))


@pytest.fixture
async def index(nursery: trio.Nursery, tmp_path: Path, database: str) -> AsyncIterator[RunningDaemon]:
    """An index daemon on SQLite (its data directory's index.db), then on PostgreSQL."""
    settings = [f"index.database={database}"] if is_postgres_url(database) else []
    running = await start_daemon(nursery, make_config(tmp_path / "index", *settings), ["index"])
    yield running
    await running.stop()


@pytest.fixture
async def client(index: RunningDaemon) -> AsyncIterator[IndexClient]:
    async with IndexClient(index.ready["roles"]["index"]["http"]) as opened:
        yield opened


@pytest.fixture
async def http(index: RunningDaemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=index.url("index"), timeout=30) as opened:
        yield opened


def error_of(response: httpx.Response) -> str:
    """The code of the one error in a response's JSON envelope."""
    assert response.headers["content-type"] == "application/json"
    errors = response.json()["errors"]
    assert len(errors) == 1 and errors[0]["message"]
    return errors[0]["code"]


async def put_manifest(http: httpx.AsyncClient, repository: str, d: str, **fields: object) -> httpx.Response:
    return await http.put(f"/repositories/{repository}/manifests/{d}",
                          json={"media_type": MANIFEST, "size": 10, **fields})


# --- the daemon ---------------------------------------------------------------------------------------

async def test_health_and_ready_document(index: RunningDaemon, http: httpx.AsyncClient,
                                         client: IndexClient) -> None:
    assert set(index.ready["roles"]["index"]) == {"http"}
    response = await http.get("/health")
    assert (response.status_code, response.text) == (200, "OK\n")  # as every port answers
    assert await client.health() is True
    assert (Path(index.config.data_dir) / "index.db").is_file() != is_postgres_url(index.config.index.database)


async def test_data_survives_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = make_config(tmp_path / "index")
    running = await start_daemon(nursery, config, ["index"])
    async with IndexClient(running.ready["roles"]["index"]["http"]) as index:
        await index.put_manifest("library/app", digest(1), media_type=MANIFEST, size=5)
        await index.put_tag("library/app", "v1", digest(1))
        await index.link_blob("library/app", digest("layer"), 77)
    await running.stop()
    running = await start_daemon(nursery, config, ["index"])
    async with IndexClient(running.ready["roles"]["index"]["http"]) as index:
        assert await index.get_tag("library/app", "v1") == digest(1)
        assert await index.blob_size("library/app", digest("layer")) == 77
        assert await index.catalog() == (["library/app"], None)
    await running.stop()


# --- the client ---------------------------------------------------------------------------------------

async def test_client_round_trip(client: IndexClient) -> None:
    repo = "library/nested/app"
    subject, sig, layer = digest("image"), digest("sig"), digest("layer")
    await client.link_blob(repo, layer, 1000)
    assert await client.blob_size(repo, layer) == 1000
    assert await client.blob_size(repo, digest("nope")) is None
    await client.put_manifest(repo, subject, media_type=MANIFEST, size=321, annotations={"a": "b"})
    await client.put_manifest(repo, Digest.parse(sig), media_type=MANIFEST, size=12, artifact_type=SIGNATURE,
                              subject=Digest.parse(subject))
    manifest = await client.get_manifest(repo, subject)
    assert manifest is not None
    assert {k: manifest[k] for k in ("digest", "media_type", "size", "artifact_type", "subject", "annotations")} == {
        "digest": subject, "media_type": MANIFEST, "size": 321, "artifact_type": None, "subject": None,
        "annotations": {"a": "b"}}
    assert await client.get_manifest(repo, digest("nope")) is None
    await client.put_tag(repo, "latest", subject)
    await client.put_tag(repo, "v1", Digest.parse(subject))
    assert await client.get_tag(repo, "latest") == subject
    assert await client.get_tag(repo, "missing") is None
    assert await client.list_tags(repo) == (["latest", "v1"], None)
    assert await client.list_tags(repo, 1) == (["latest"], {"last": "latest", "n": 1})
    assert await client.list_tags(repo, 1, "latest") == (["v1"], None)
    assert await client.catalog() == ([repo], None)
    assert await client.referrers(repo, subject) == [
        {"mediaType": MANIFEST, "digest": sig, "size": 12, "artifactType": SIGNATURE, "annotations": {}}]
    assert await client.referrers(repo, subject, SIGNATURE) == await client.referrers(repo, subject)
    assert await client.referrers(repo, subject, "application/other") == []
    await client.delete_tag(repo, "v1")
    assert await client.delete_manifest(repo, subject) == ["latest"]
    assert await client.get_tag(repo, "latest") is None
    await client.unlink_blob(repo, layer)
    assert await client.blob_size(repo, layer) is None


async def test_client_raises_the_index_error_codes(client: IndexClient) -> None:
    cases = [
        (lambda: client.put_tag("r", "t", digest(1)), MANIFEST_UNKNOWN),
        (lambda: client.delete_tag("r", "t"), MANIFEST_UNKNOWN),
        (lambda: client.delete_manifest("r", digest(1)), MANIFEST_UNKNOWN),
        (lambda: client.unlink_blob("r", digest(1)), BLOB_UNKNOWN),
        (lambda: client.list_tags("r"), NAME_UNKNOWN),
        (lambda: client.put_manifest("r", digest(1), media_type="nonsense", size=1), BAD_REQUEST),
        (lambda: client.link_blob("r", digest(1), -5), BAD_REQUEST),
        (lambda: client.put_manifest("r", digest(1), media_type=MANIFEST, size=1, blobs=[digest(2)]),
         MANIFEST_BLOB_UNKNOWN),
    ]
    for call, code in cases:
        with pytest.raises(SwarmregError) as info:
            await call()
        assert info.value.code is code
        assert info.value.message


async def test_client_checks_names_before_asking() -> None:
    # Nothing listens there: a check made by the index itself would raise UNAVAILABLE instead.
    async with IndexClient(Address("127.0.0.1", free_port()), attempts=1) as index:
        for call, code in [(lambda: index.get_tag("Upper/Case", "t"), NAME_INVALID),
                           (lambda: index.put_tag("ok", "-bad", digest(1)), TAG_INVALID),
                           (lambda: index.get_manifest("ok", "sha256:short"), DIGEST_INVALID),
                           (lambda: index.blob_size("a//b", digest(1)), NAME_INVALID),
                           (lambda: index.list_tags("../etc"), NAME_INVALID)]:
            with pytest.raises(SwarmregError) as info:
                await call()
            assert info.value.code is code


async def test_client_reports_an_unreachable_index() -> None:
    port = free_port()
    async with IndexClient(f"127.0.0.1:{port}", attempts=3, backoff=0.01) as index:
        assert await index.health() is False
        with trio.fail_after(10):
            with pytest.raises(SwarmregError) as info:
                await index.get_tag("r", "t")
    assert info.value.code is UNAVAILABLE
    # The service and the reason's type, never the address: the error may reach a registry client.
    assert info.value.message == "index unavailable: ConnectError"
    assert str(port) not in info.value.message and not info.value.detail


async def test_client_retries_until_the_index_listens(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path / "index", f"index.listen=127.0.0.1:{port}")

    async def start_late() -> None:
        await trio.sleep(0.3)
        await start_daemon(nursery, config, ["index"])

    nursery.start_soon(start_late)
    async with IndexClient(f"http://127.0.0.1:{port}", attempts=8, backoff=0.1) as index:
        with trio.fail_after(30):
            assert await index.catalog() == ([], None)


async def test_client_maps_answers_without_an_envelope(nursery: trio.Nursery) -> None:
    app = QuartTrio("not-an-index")

    @app.route("/<path:rest>", methods=["GET", "PUT", "HEAD", "DELETE"])
    async def teapot(rest: str) -> tuple[str, int]:
        return "no envelope here", 500

    stop = trio.Event()
    address = await nursery.start(partial(serve_http, app, Address("127.0.0.1", 0), http=HttpConfig(),
                                          stop=stop, graceful_timeout=1))
    async with IndexClient(address) as index:
        with pytest.raises(SwarmregError) as info:
            await index.get_tag("r", "t")
        assert info.value.code is BAD_GATEWAY and "500" in info.value.message
    stop.set()


async def test_client_lists_tags_of_a_repository_named_tags(client: IndexClient, http: httpx.AsyncClient) -> None:
    # /repositories/a/tags/tags reads as tag "tags" of repository "a"; the client avoids it.
    await client.put_manifest("a", digest(1), media_type=MANIFEST, size=1)
    await client.put_tag("a", "tags", digest(1))
    await client.put_manifest("a/tags", digest(2), media_type=MANIFEST, size=1)
    await client.put_tag("a/tags", "x", digest(2))
    assert await client.list_tags("a/tags") == (["x"], None)
    assert await client.list_tags("a") == (["tags"], None)
    assert (await http.get("/repositories/a/tags/tags")).json()["digest"] == digest(1)
    assert (await http.get("/repositories/a/tags/tags/-/list")).json()["tags"] == ["x"]


async def test_concurrent_clients(index: RunningDaemon, client: IndexClient) -> None:
    async def push(i: int) -> None:
        repository = f"app{i % 4}"
        await client.put_manifest(repository, digest(i), media_type=MANIFEST, size=i)
        await client.put_tag(repository, f"v{i:03}", digest(i))

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(push, i)
    tags, _ = await client.list_tags("app1")
    assert tags == [f"v{i:03}" for i in range(1, 60, 4)]
    assert (await client.catalog())[0] == ["app0", "app1", "app2", "app3"]


# --- raw HTTP: tags -------------------------------------------------------------------------------------

async def test_tag_statuses(http: httpx.AsyncClient) -> None:
    base = "/repositories/a/b/tags/x"
    assert (await put_manifest(http, "a/b", digest(1))).status_code == 201
    response = await http.put(base, json={"digest": digest(1)})
    assert response.status_code == 201
    response = await http.get(base)
    assert response.status_code == 200
    assert response.json() == {"repository": "a/b", "tag": "x", "digest": digest(1)}
    response = await http.head(base)
    assert (response.status_code, response.headers["Docker-Content-Digest"]) == (200, digest(1))
    assert (await http.delete(base)).status_code == 202
    assert (await http.head(base)).status_code == 404
    for response in (await http.get(base), await http.delete(base)):
        assert response.status_code == 404 and error_of(response) == "MANIFEST_UNKNOWN"
    # The body may repeat the URL's fields (as a GET gives them), but must agree with it.
    response = await http.put(base, json={"repository": "a/b", "tag": "x", "digest": digest(1)})
    assert response.status_code == 201
    response = await http.put(base, json={"repository": "a/c", "tag": "x", "digest": digest(1)})
    assert response.status_code == 400 and error_of(response) == "BAD_REQUEST"


async def test_tag_of_an_unknown_manifest(http: httpx.AsyncClient) -> None:
    await put_manifest(http, "other", digest(1))
    response = await http.put("/repositories/mine/tags/latest", json={"digest": digest(1)})
    assert response.status_code == 404 and error_of(response) == "MANIFEST_UNKNOWN"


async def test_tag_list_pagination(http: httpx.AsyncClient) -> None:
    await put_manifest(http, "library/app", digest(1))
    tags = ["v3", "v1", "latest", "V2", "v1.0", "v1-0", "_x"]
    for tag in tags:
        assert (await http.put(f"/repositories/library/app/tags/{tag}", json={"digest": digest(1)})).status_code == 201
    response = await http.get("/repositories/library/app/tags")
    assert response.status_code == 200 and "Link" not in response.headers
    assert response.json() == {"name": "library/app", "tags": sorted(tags), "next": None}

    response = await http.get("/repositories/library/app/tags", params={"n": 3})
    assert response.json()["tags"] == ["V2", "_x", "latest"]
    assert response.headers["Link"] == '</v2/library/app/tags/list?last=latest&n=3>; rel="next"'
    assert response.json()["next"] == {"last": "latest", "n": 3}
    response = await http.get("/repositories/library/app/tags", params={"n": 3, "last": "latest"})
    assert response.json()["tags"] == ["v1", "v1-0", "v1.0"]
    response = await http.get("/repositories/library/app/tags", params={"n": 3, "last": "v1.0"})
    assert response.json() == {"name": "library/app", "tags": ["v3"], "next": None}
    assert "Link" not in response.headers

    for params in ({"n": 0}, {"n": 7}, {"n": 100}, {"last": "zzz"}, {"n": 2, "last": "zzz"}):
        response = await http.get("/repositories/library/app/tags", params=params)
        assert response.status_code == 200 and "Link" not in response.headers
        assert response.json()["next"] is None
        expected = [] if params.get("n") == 0 or "last" in params else sorted(tags)
        assert response.json()["tags"] == expected
    for bad in ("-1", "x", "1.5", "٣"):
        response = await http.get("/repositories/library/app/tags", params={"n": bad})
        assert response.status_code == 400 and error_of(response) == "PAGINATION_NUMBER_INVALID"


async def test_tag_list_of_an_unknown_repository(http: httpx.AsyncClient) -> None:
    for params in ({}, {"n": 0}):
        response = await http.get("/repositories/nobody/home/tags", params=params)
        assert response.status_code == 404 and error_of(response) == "NAME_UNKNOWN"
        assert response.json()["errors"][0]["detail"] == {"name": "nobody/home"}


# --- raw HTTP: the catalog --------------------------------------------------------------------------

async def test_catalog_pagination(http: httpx.AsyncClient) -> None:
    response = await http.get("/repositories")
    assert response.json() == {"repositories": [], "next": None}
    names = ["a", "a/b", "a-b", "b/c/d", "z"]
    for name in names:
        assert (await http.put(f"/repositories/{name}/blobs/{digest(1)}", json={"size": 1})).status_code == 201
    response = await http.get("/repositories")
    assert response.json() == {"repositories": sorted(names), "next": None}
    assert sorted(names) == ["a", "a-b", "a/b", "b/c/d", "z"]
    response = await http.get("/repositories", params={"n": 3})
    assert response.json()["repositories"] == ["a", "a-b", "a/b"]
    assert response.headers["Link"] == '</v2/_catalog?last=a%2Fb&n=3>; rel="next"'
    assert response.json()["next"] == {"last": "a/b", "n": 3}
    response = await http.get("/repositories", params={"n": 3, "last": "a/b"})
    assert response.json() == {"repositories": ["b/c/d", "z"], "next": None}
    response = await http.get("/repositories", params={"n": 0})
    assert response.json() == {"repositories": [], "next": None}
    response = await http.get("/repositories", params={"n": "many"})
    assert response.status_code == 400 and error_of(response) == "PAGINATION_NUMBER_INVALID"


# --- raw HTTP: manifests and referrers -----------------------------------------------------------------

async def test_manifest_statuses(http: httpx.AsyncClient) -> None:
    url = f"/repositories/r/manifests/{digest(1)}"
    response = await put_manifest(http, "r", digest(1), size=99, artifact_type=SIGNATURE, subject=digest(0),
                                  annotations={"k": "v"})
    assert response.status_code == 201
    response = await http.get(url)
    assert response.status_code == 200
    body = response.json()
    assert body.pop("created").endswith("Z")
    assert body == {"digest": digest(1), "media_type": MANIFEST, "size": 99, "artifact_type": SIGNATURE,
                    "subject": digest(0), "annotations": {"k": "v"}}
    response = await http.head(url)
    assert response.status_code == 200
    assert response.headers["Manifest-Media-Type"] == MANIFEST and response.headers["Manifest-Size"] == "99"
    # A GET's answer can be PUT back as it is.
    assert (await http.put(url, json=(await http.get(url)).json())).status_code == 201
    await http.put("/repositories/r/tags/t1", json={"digest": digest(1)})
    await http.put("/repositories/r/tags/t2", json={"digest": digest(1)})
    response = await http.delete(url)
    assert response.status_code == 202 and response.json() == {"deleted_tags": ["t1", "t2"]}
    assert (await http.get("/repositories/r/tags/t1")).status_code == 404
    assert (await http.head(url)).status_code == 404
    for response in (await http.get(url), await http.delete(url)):
        assert response.status_code == 404 and error_of(response) == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize("body", [
    {"size": 1},
    {"media_type": MANIFEST},
    {"media_type": "not a media type", "size": 1},
    {"media_type": MANIFEST, "size": -1},
    {"media_type": MANIFEST, "size": "1"},
    {"media_type": MANIFEST, "size": True},
    {"media_type": MANIFEST, "size": 1, "artifact_type": 5},
    {"media_type": MANIFEST, "size": 1, "annotations": {"k": 1}},
    {"media_type": MANIFEST, "size": 1, "annotations": ["k"]},
    {"media_type": MANIFEST, "size": 1, "mediaType": MANIFEST},
    {"media_type": MANIFEST, "size": 1, "digest": "sha256:" + "0" * 64},
    {"media_type": MANIFEST, "size": 1, "blobs": "sha256:" + "0" * 64},
    {"media_type": MANIFEST, "size": 1, "blobs": [5]},
    {"media_type": MANIFEST, "size": 1, "children": {"a": 1}},
    ["media_type", "size"],
])
async def test_bad_manifest_bodies(http: httpx.AsyncClient, body: object) -> None:
    response = await http.put(f"/repositories/r/manifests/{digest(1)}", json=body)
    assert response.status_code == 400 and error_of(response) == "BAD_REQUEST"
    assert (await http.get(f"/repositories/r/manifests/{digest(1)}")).status_code == 404


async def test_media_types_may_have_parameters(client: IndexClient) -> None:
    docker = "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"
    await client.put_manifest("r", digest(1), media_type=docker, size=1, artifact_type="application/x.y+json")
    manifest = await client.get_manifest("r", digest(1))
    assert manifest is not None and manifest["media_type"] == docker


async def test_bad_bodies(http: httpx.AsyncClient) -> None:
    for url, content in [(f"/repositories/r/manifests/{digest(1)}", b"{not json"),
                         (f"/repositories/r/blobs/{digest(1)}", b""),
                         ("/repositories/r/tags/t", b"[]"),
                         (f"/repositories/r/blobs/{digest(1)}", b'{"size": 1, "extra": 2}')]:
        response = await http.put(url, content=content)
        assert response.status_code == 400 and error_of(response) == "BAD_REQUEST", url
    response = await http.put(f"/repositories/r/manifests/{digest(1)}",
                              json={"media_type": MANIFEST, "size": 1, "subject": "sha256:nothex"})
    assert response.status_code == 400 and error_of(response) == "DIGEST_INVALID"
    response = await http.put("/repositories/r/tags/t", json={"digest": "md5:abc"})
    assert response.status_code == 400 and error_of(response) == "DIGEST_INVALID"


async def test_large_bodies_are_refused(http: httpx.AsyncClient) -> None:
    # A record must hold the annotations of any manifest a registry accepts (up to 4 MiB) ...
    annotations = {"padding": "v" * (MAX_MANIFEST_SIZE - 200)}
    assert (await put_manifest(http, "r", digest(1), annotations=annotations)).status_code == 201
    # ... and nothing much larger.
    annotations = {f"k{i}": "v" * 1000 for i in range(MAX_MANIFEST_SIZE // 1000 + 100)}
    response = await put_manifest(http, "r", digest(1), annotations=annotations)
    assert response.status_code == 413 and error_of(response) == "TOO_LARGE"


async def test_referrers(http: httpx.AsyncClient) -> None:
    subject = digest("image")
    await put_manifest(http, "r", subject)
    for i in range(3):
        await put_manifest(http, "r", digest(f"sig{i}"), artifact_type=SIGNATURE, subject=subject,
                           annotations={"n": str(i)})
    await put_manifest(http, "r", digest("sbom"), artifact_type="application/vnd.example.sbom", subject=subject)
    response = await http.get(f"/repositories/r/referrers/{subject}")
    assert response.status_code == 200 and "OCI-Filters-Applied" not in response.headers
    manifests = response.json()["manifests"]
    assert [m["digest"] for m in manifests] == sorted([digest("sig0"), digest("sig1"), digest("sig2"),
                                                       digest("sbom")])
    response = await http.get(f"/repositories/r/referrers/{subject}", params={"artifactType": SIGNATURE})
    assert response.headers["OCI-Filters-Applied"] == "artifactType"
    manifests = response.json()["manifests"]
    assert [m["artifactType"] for m in manifests] == [SIGNATURE] * 3
    assert {m["annotations"]["n"] for m in manifests} == {"0", "1", "2"}
    assert set(manifests[0]) == {"mediaType", "digest", "size", "artifactType", "annotations"}
    response = await http.get(f"/repositories/unknown/referrers/{subject}")
    assert response.json() == {"manifests": []}


# --- raw HTTP: blob links ---------------------------------------------------------------------------------

async def test_blob_statuses(http: httpx.AsyncClient) -> None:
    url = f"/repositories/org/team/img/blobs/{digest('layer')}"
    assert (await http.head(url)).status_code == 404
    assert (await http.put(url, json={"size": 31337})).status_code == 201
    response = await http.head(url)
    assert response.status_code == 200 and response.headers["Blob-Size"] == "31337"
    response = await http.get(url)
    assert response.json()["size"] == 31337
    assert (await http.delete(url)).status_code == 202
    for response in (await http.get(url), await http.delete(url)):
        assert response.status_code == 404 and error_of(response) == "BLOB_UNKNOWN"
    for size in (-1, "12", None, 1.5):
        response = await http.put(url, json={"size": size})
        assert response.status_code == 400 and error_of(response) == "BAD_REQUEST"


# --- raw HTTP: names, digests, routes -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Library/app", "a/-b", "-a", "a__-b", "a/.b", "a..b", "a" * 256, "a:b", "é"])
async def test_bad_repository_names(http: httpx.AsyncClient, name: str) -> None:
    for method, path in [("GET", f"/repositories/{name}/tags"), ("PUT", f"/repositories/{name}/tags/t"),
                         ("GET", f"/repositories/{name}/manifests/{digest(1)}"),
                         ("GET", f"/repositories/{name}/referrers/{digest(1)}"),
                         ("PUT", f"/repositories/{name}/blobs/{digest(1)}")]:
        response = await http.request(method, path, json={"size": 1, "digest": digest(1)})
        assert response.status_code == 400 and error_of(response) == "NAME_INVALID", (method, path)


async def test_names_with_empty_components_are_refused(http: httpx.AsyncClient) -> None:
    for path in ["/repositories/a//b/tags", "/repositories/a/b//tags", f"/repositories//a/blobs/{digest(1)}"]:
        response = await http.get(path)
        assert response.status_code in (400, 404), path
        assert error_of(response) in ("NAME_INVALID", "NOT_FOUND"), path


async def test_good_repository_names(http: httpx.AsyncClient) -> None:
    for name in ["a", "a/b/c/d", "a.b", "a_b", "a__b", "a---b", "0/1", "x" * 255, "tags", "blobs/manifests"]:
        response = await http.put(f"/repositories/{name}/blobs/{digest(1)}", json={"size": 1})
        assert response.status_code == 201, name
        assert (await http.get(f"/repositories/{name}/tags")).json() == {"name": name, "tags": [], "next": None}


@pytest.mark.parametrize("bad", ["sha256:abc", "sha384:" + "a" * 96, "sha512:" + "a" * 64, "sha256:" + "A" * 64,
                                 "sha256:", ":x"])
async def test_bad_digests(http: httpx.AsyncClient, bad: str) -> None:
    for method, path in [("GET", f"/repositories/r/manifests/{bad}"), ("DELETE", f"/repositories/r/blobs/{bad}"),
                         ("GET", f"/repositories/r/referrers/{bad}"), ("PUT", f"/repositories/r/blobs/{bad}")]:
        response = await http.request(method, path, json={"size": 1})
        assert response.status_code == 400 and error_of(response) == "DIGEST_INVALID", (method, path)


async def test_a_digest_segment_needs_a_colon(http: httpx.AsyncClient) -> None:
    # Without one it is no digest route: /repositories/x/blobs/tags is the tag list of x/blobs.
    response = await http.get("/repositories/r/manifests/latest")
    assert response.status_code == 404 and error_of(response) == "NOT_FOUND"
    await http.put(f"/repositories/x/blobs/blobs/{digest(1)}", json={"size": 1})
    response = await http.get("/repositories/x/blobs/tags")
    assert response.json() == {"name": "x/blobs", "tags": [], "next": None}


@pytest.mark.parametrize("tag", ["-x", ".x", "a" * 129, "a+b"])
async def test_bad_tags(http: httpx.AsyncClient, tag: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await http.request(method, f"/repositories/r/tags/{tag}", json={"digest": digest(1)})
        assert response.status_code == 400 and error_of(response) == "TAG_INVALID"


async def test_unknown_routes_and_methods(http: httpx.AsyncClient) -> None:
    for path in ["/nope", "/repositories/a/b", "/repositories/a/b/things/x"]:
        response = await http.get(path)
        assert response.status_code == 404 and error_of(response) == "NOT_FOUND", path
    response = await http.post("/repositories/a/tags/x", json={})
    assert response.status_code == 405 and error_of(response) == "UNSUPPORTED"


@pytest.mark.parametrize("n", ["99999999999999999999", "10001", "9" * 5000])
async def test_a_page_size_past_the_bound_is_400_not_an_overflow(http: httpx.AsyncClient, n: str) -> None:
    """SQLite's integers overflowed on a huge n (a 500); every list takes at most 10000."""
    await put_manifest(http, "library/app", digest(1))
    assert (await http.put("/repositories/library/app/tags/v1", json={"digest": digest(1)})).status_code == 201
    for path in ("/repositories", "/repositories/library/app/tags"):
        response = await http.get(path, params={"n": n})
        assert response.status_code == 400 and error_of(response) == "PAGINATION_NUMBER_INVALID", response.text
        assert "Overflow" not in response.text
        assert (await http.get(path, params={"n": "10000"})).status_code == 200


async def test_values_a_database_cannot_hold_are_refused_alike_by_both_stores(http: httpx.AsyncClient) -> None:
    assert (await put_manifest(http, "r", digest(1))).status_code == 201
    assert (await http.put(f"/repositories/r/blobs/{digest(2)}", json={"size": 1})).status_code == 201
    refused = [
        await http.get("/repositories", params={"last": "a\x00b"}),
        await http.get("/repositories/r/tags/-/list", params={"last": "\x00"}),
        await http.get(f"/repositories/r/referrers/{digest(1)}", params={"artifactType": "x\x00y"}),
        await http.get("/admin/blobs", params={"substr": "\x00"}),
        await http.get("/gc/unknown", params={"last": "r@\x00"}),
        await http.get("/repositories", params={"last": "x" * 1025}),
        await put_manifest(http, "r", digest(3), size=2 ** 63),
        await http.put(f"/repositories/r/blobs/{digest(4)}", json={"size": 2 ** 64}),
    ]
    for response in refused:
        assert (response.status_code, error_of(response)) == (400, "BAD_REQUEST"), response.text
    assert (await put_manifest(http, "r", digest(3), size=2 ** 63 - 1)).status_code == 201, "the largest size"
    listed = await http.get("/repositories", params={"last": "é ünïcode?%:x"})
    assert listed.status_code == 200 and listed.json()["repositories"] == []
    assert (await http.get("/repositories")).json()["repositories"] == ["r"], "nothing changed"
