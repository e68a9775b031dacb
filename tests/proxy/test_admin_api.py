"""The proxy's admin API (issue 13 points 3 and 4): who may use it, each prune type by dry run
and for real, manifest lists and their children, counts, the text and JSON answers, bad
parameters, and the access times an agent's pull renews."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import make_config, random_bytes, start_daemon
from tests.proxy.admin_helpers import USERS, access_times, backdate, start_herd, table
from tests.proxy.helpers import OCI_INDEX, RegistryAuth, descriptor, digest_of, push_image

JSON_ONLY = {"Accept": "application/json"}
ADMIN = ("admin", USERS["admin"])
ENDPOINTS = [("DELETE", "/cmd/prune?type=pattern&expr=.*"), ("GET", "/cmd/image/list"),
             ("GET", "/cmd/blob/list"), ("GET", "/cmd/manifest/list"), ("POST", "/cmd/gc")]


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


async def push_app(proxy: httpx.AsyncClient, repository: str, tag: str = "v1", seed: int = 0) -> str:
    digest, _ = await push_image(proxy, repository, tag, [random_bytes(1000, seed=seed)])
    return digest


async def test_the_admin_api_is_refused_without_the_admin_action(nursery: trio.Nursery, tmp_path: Path) -> None:
    # No users at all: everyone is anonymous, and no rule gives anonymous the admin action.
    open_herd = await start_daemon(nursery, make_config(tmp_path / "open"), ["origin", "tracker", "index", "proxy"])
    async with httpx.AsyncClient(base_url=open_herd.url("proxy"), timeout=30) as client:
        await push_app(client, "team/app")
        for method, path in ENDPOINTS:
            refused = await client.request(method, path)
            assert (refused.status_code, code(refused)) == (403, "DENIED"), path
        assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200  # the prune did nothing

    # Users, and rules of which none grants admin: nobody may, not even the one who may do all else.
    no_admin = await start_herd(nursery, tmp_path, rules=[("*", ".*", ["pull", "push", "delete"])], name="none")
    herd = await start_herd(nursery, tmp_path)
    for running, allowed in ((no_admin, None), (herd, "admin")):
        async with httpx.AsyncClient(base_url=running.url("proxy"), timeout=30) as client:
            for method, path in ENDPOINTS:
                anonymous = await client.request(method, path)
                assert anonymous.status_code == 401 and code(anonymous) == "UNAUTHORIZED", path
                assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
                wrong = await client.request(method, path, auth=("admin", "wrong"))
                assert wrong.status_code == 401, path
                carol = await client.request(method, path, auth=("carol", USERS["carol"]))
                assert (carol.status_code, code(carol)) == (403, "DENIED"), path
                assert carol.json()["errors"][0]["detail"] == {"scope": "registry:admin:*"}
            listed = await client.get("/cmd/image/list", auth=ADMIN)
            assert listed.status_code == (200 if allowed else 403)


async def test_tokens_carry_the_admin_scope_only_for_admins(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, auth="token")
    proxy = herd.url("proxy")
    async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
        challenge = await client.get("/cmd/image/list")
        assert challenge.status_code == 401
        assert 'scope="registry:admin:*"' in challenge.headers["WWW-Authenticate"]
        assert challenge.headers["WWW-Authenticate"].startswith("Bearer ")
        carol = await client.get("/token", params={"service": "swarmreg", "scope": "registry:admin:*"},
                                 auth=("carol", USERS["carol"]))
        refused = await client.get("/cmd/image/list", headers={"Authorization": f"Bearer {carol.json()['token']}"})
        assert refused.status_code == 401 and 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        carol_basic = await client.get("/cmd/image/list", auth=("carol", USERS["carol"]))
        assert (carol_basic.status_code, code(carol_basic)) == (403, "DENIED")
    async with httpx.AsyncClient(base_url=proxy, timeout=30, auth=RegistryAuth(*ADMIN)) as admin:
        assert (await admin.get("/cmd/image/list")).status_code == 200  # the token dance, as docker does it


async def test_each_prune_type_by_dry_run_and_for_real(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        old = await push_app(proxy, "team/old", seed=1)
        await push_app(proxy, "team/pulled", seed=2)
        new = await push_app(proxy, "team/new", seed=3)
        backdate(herd, "team/old", 40)
        backdate(herd, "team/pulled", 40)
        assert (await proxy.get("/v2/team/pulled/manifests/v1")).status_code == 200  # a pull: accessed now

        dry = await proxy.delete("/cmd/prune", params={"type": "accessed", "dur": "30d", "dryRun": "true"},
                                 headers=JSON_ONLY)
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True
        assert [(m["repository"], m["digest"], m["tags"]) for m in dry.json()["manifests"]] == [
            ("team/old", old, ["v1"])]
        # Nothing changed (asked of the admin list: a pull would renew the access time).
        listed = await proxy.get("/cmd/image/list", headers=JSON_ONLY)
        assert [i["reference"] for i in listed.json()["images"]] == ["team/new:v1", "team/old:v1", "team/pulled:v1"]

        real = await proxy.delete("/cmd/prune", params={"type": "accessed", "dur": "30d"})
        rows = table(real.text)
        assert rows[0] == ["ACTION", "URL", "DIGEST", "TAGS", "CREATED", "PULLED"]
        assert rows[1][:4] == ["pruned", f"team/old@{old[:17]}", old, "v1"] and rows[1][5] == "-"
        for reference in ("v1", old):
            gone = await proxy.get(f"/v2/team/old/manifests/{reference}")
            assert (gone.status_code, code(gone)) == (404, "MANIFEST_UNKNOWN")
        assert (await proxy.get("/v2/team/old/tags/list")).json()["tags"] == []

        created = await proxy.delete("/cmd/prune", params={"type": "created", "dur": "720h"}, headers=JSON_ONLY)
        assert [m["repository"] for m in created.json()["manifests"]] == ["team/pulled"]
        assert (await proxy.get("/v2/team/pulled/manifests/v1")).status_code == 404

        pattern = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "^team/new:v1$",
                                                           "dryRun": "1"})
        assert table(pattern.text)[1][:3] == ["would-prune", f"team/new@{new[:17]}", new]
        await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "^team/new:v1$"})
        assert (await proxy.get("/v2/team/new/manifests/v1")).status_code == 404
        nothing = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "team"})
        assert nothing.text == "nothing to prune\n"


async def test_the_api_prunes_five_by_default_and_count_says_otherwise(nursery: trio.Nursery,
                                                                       tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        for n in range(7):
            await push_app(proxy, f"team/app{n}", seed=n)
        default = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "team/", "dryRun": "true"},
                                     headers=JSON_ONLY)
        assert default.json()["count"] == 5
        two = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "team/", "count": "2"},
                                 headers=JSON_ONLY)
        assert two.json()["count"] == 2
        everything = await proxy.delete("/cmd/prune", params={"type": "created", "dur": "0", "count": "-1"},
                                        headers=JSON_ONLY)
        assert everything.json()["count"] == 5
        assert (await proxy.get("/cmd/manifest/list")).text == "no manifests found\n"


async def test_a_pruned_list_takes_its_children_and_a_shared_child_stays(nursery: trio.Nursery,
                                                                        tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        repo = "team/multi"
        children = {}
        for name, seed in (("only-v1", 1), ("shared", 2), ("only-v2", 3)):
            digest, body = await push_image(proxy, repo, name, [random_bytes(500, seed=seed)])
            await proxy.delete(f"/v2/{repo}/manifests/{name}")  # an untagged child, by digest only
            children[name] = descriptor("application/vnd.docker.distribution.manifest.v2+json", body)
        for tag, names in (("v1", ["only-v1", "shared"]), ("v2", ["shared", "only-v2"])):
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                "manifests": [children[name] for name in names]}).encode()
            put = await proxy.put(f"/v2/{repo}/manifests/{tag}", content=index, headers={"Content-Type": OCI_INDEX})
            assert put.status_code == 201, put.text

        report = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": ":v1$"}, headers=JSON_ONLY)
        gone = {m["digest"]: m["parent"] for m in report.json()["manifests"]}
        v1 = [d for d, parent in gone.items() if parent is None]
        assert gone == {v1[0]: None, children["only-v1"]["digest"]: v1[0]}
        missing = await proxy.get(f"/v2/{repo}/manifests/{children['only-v1']['digest']}")
        assert missing.status_code == 404
        for kept in ("v2", children["shared"]["digest"], children["only-v2"]["digest"]):
            assert (await proxy.get(f"/v2/{repo}/manifests/{kept}")).status_code == 200, kept


async def test_the_lists_answer_columns_and_json(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    common = random_bytes(800, seed=9)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        one, _ = await push_image(proxy, "team/one", "v1", [common, random_bytes(700, seed=1)])
        await push_image(proxy, "team/two", "v1", [common])
        await proxy.put("/v2/team/one/manifests/latest",
                        content=(await proxy.get(f"/v2/team/one/manifests/{one}")).content,
                        headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})

        images = await proxy.get("/cmd/image/list", params={"pattern": "one"})
        rows = table(images.text)
        assert rows[0] == ["URL", "DIGEST", "MEDIATYPE", "SIZE", "CREATED", "PULLED"]
        refs = [row for row in rows[1:] if row[0] != "-"]
        assert [row[0] for row in refs] == ["team/one:latest", "team/one:v1"] and all(len(r) == 6 for r in refs)
        assert sum(1 for row in rows if row[0] == "-") == 6  # config and two layers, under each tag
        # Aligned as column -t aligns: every column starts at the same offset on each full row.
        lines = [line for line in images.text.splitlines() if not line.startswith("-")]
        assert len({line.index(row[1]) for line, row in zip(lines, [rows[0], *refs], strict=True)}) == 1

        as_json = await proxy.get("/cmd/image/list", headers=JSON_ONLY)
        assert [i["reference"] for i in as_json.json()["images"]] == ["team/one:latest", "team/one:v1",
                                                                      "team/two:v1"]
        by_blob = await proxy.get("/cmd/image/list", params={"digest": digest_of(common)[:19]},
                                  headers=JSON_ONLY)
        assert len(by_blob.json()["images"]) == 3
        assert len((await proxy.get("/cmd/image/list", params={"count": "1"}, headers=JSON_ONLY)
                    ).json()["images"]) == 1

        blobs = table((await proxy.get("/cmd/blob/list", params={"substr": digest_of(common)[7:23]})).text)
        assert blobs == [["DIGEST", "SIZE", "MANIFESTS", "REPOSITORIES"], [digest_of(common), "800", "2", "2"]]
        manifests = table((await proxy.get("/cmd/manifest/list", params={"pattern": "team/one"})).text)
        assert manifests[0] == ["URL", "DIGEST", "MEDIATYPE", "SIZE", "TAGS", "CREATED", "PULLED"]
        assert manifests[1][1] == one and manifests[1][4] == "latest,v1"



@pytest.mark.parametrize(("method", "path", "parameter"), [
    ("DELETE", "/cmd/prune?type=bogus", "type"),
    ("DELETE", "/cmd/prune", "type"),
    ("DELETE", "/cmd/prune?type=accessed", "dur"),
    ("DELETE", "/cmd/prune?type=accessed&dur=30x", "dur"),
    ("DELETE", "/cmd/prune?type=created&dur=-1d", "dur"),
    ("DELETE", "/cmd/prune?type=pattern", "expr"),
    ("DELETE", "/cmd/prune?type=pattern&expr=(", "expr"),
    ("DELETE", "/cmd/prune?type=pattern&expr=.*&count=many", "count"),
    ("DELETE", "/cmd/prune?type=pattern&expr=.*&dryRun=maybe", "dryRun"),
    ("DELETE", "/cmd/prune?type=pattern&expr=.*&dryrun=true", "dryrun"),  # a misspelt dry run prunes nothing
    ("DELETE", "/cmd/prune?type=pattern&expr=.*&dryRun=true&dryRun=false", "dryRun"),
    ("GET", "/cmd/image/list?pattern=[", "pattern"),
    ("GET", "/cmd/image/list?count=-5", "count"),
    ("GET", "/cmd/blob/list?pattern=x", "pattern"),
    ("POST", "/cmd/gc?dryRun=yes", "dryRun"),
])
async def test_bad_parameters_are_400_naming_them_and_change_nothing(
        nursery: trio.Nursery, tmp_path: Path, method: str, path: str, parameter: str) -> None:
    herd = await start_herd(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        await push_app(proxy, "team/app")
        refused = await proxy.request(method, path)
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["code"] == "BAD_REQUEST"
        assert refused.json()["errors"][0]["detail"] == {"parameter": parameter}
        assert (await proxy.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_an_agents_pull_renews_the_access_time_and_a_restart_keeps_it(nursery: trio.Nursery,
                                                                           tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path)
    roles = herd.ready["roles"]
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", f"agent.tracker={roles['tracker']['ws']}", f"agent.index={roles['index']['http']}",
        "agent.tag_ttl=0"), ["agent"])  # every pull asks the index
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        digest = await push_app(proxy, "team/app")
        await push_app(proxy, "team/idle", seed=5)
        listed = (await proxy.get("/cmd/manifest/list", headers=JSON_ONLY)).json()["manifests"]
        assert [m["accessed"] for m in listed] == [None, None]  # a push is no pull
        backdate(herd, "team/app", 2)
        backdate(herd, "team/idle", 2)
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=30) as registry:
        assert (await registry.get("/v2/team/app/manifests/v1")).status_code == 200
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        # The prune writes the noted pulls first: the one of a moment ago counts.
        dry = await proxy.delete("/cmd/prune", params={"type": "accessed", "dur": "1d", "dryRun": "true"},
                                 headers=JSON_ONLY)
        assert [m["repository"] for m in dry.json()["manifests"]] == ["team/idle"]
    # The last pull is on disk once the herd has stopped (written then, if not before), and read
    # back when it starts again.
    pulled_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    async with httpx.AsyncClient(base_url=agent.url("agent", "registry"), timeout=30) as registry:
        assert (await registry.get(f"/v2/team/app/manifests/{digest}")).status_code == 200
    await agent.stop()
    await herd.stop()
    after_stop = access_times(herd)
    assert (after_stop["team/app"] or "") >= pulled_at and after_stop["team/idle"] is None
    again = await start_daemon(nursery, herd.config, ["origin", "tracker", "index", "proxy"])
    async with httpx.AsyncClient(base_url=again.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        listed = (await proxy.get("/cmd/manifest/list", headers=JSON_ONLY)).json()["manifests"]
        assert {m["repository"]: m["accessed"] for m in listed} == after_stop



async def test_pushes_racing_prunes_of_their_names_never_fail(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The proxy records a manifest, then its tag: a prune between the two must not take the
    manifest (the push would fail with MANIFEST_UNKNOWN), nor leave a tag without its manifest."""
    herd = await start_herd(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60, auth=ADMIN) as proxy:
        pushing = True

        async def pusher(k: int) -> None:
            for i in range(8):
                await push_app(proxy, f"team/race{k}", f"t{i}", seed=k * 100 + i)  # asserts 201

        async def pruner() -> None:
            while pushing:
                pruned = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "team/race",
                                                                  "count": "-1"})
                assert pruned.status_code == 200, pruned.text

        async with trio.open_nursery() as racing:
            racing.start_soon(pruner)
            async with trio.open_nursery() as pushers:
                for k in range(3):
                    pushers.start_soon(pusher, k)
            pushing = False
        for image in (await proxy.get("/cmd/image/list", params={"count": "-1"}, headers=JSON_ONLY)).json()["images"]:
            assert (await proxy.get(f"/v2/{image['repository']}/manifests/{image['tag']}")).status_code == 200


async def test_the_index_takes_a_prune_only_from_a_cluster_writer(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, "cluster.secret=s3cret-for-the-herd")
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        await push_app(proxy, "team/app")
    body = {"type": "pattern", "expr": "team/app", "duration": 0, "count": None, "dry_run": False}
    async with httpx.AsyncClient(base_url=herd.url("index"), timeout=30) as index:
        refused = await index.post("/admin/prune", json=body)
        assert (refused.status_code, code(refused)) == (401, "UNAUTHORIZED")
        assert (await index.get("/admin/images")).json()["images"][0]["reference"] == "team/app:v1"  # a read
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=30, auth=ADMIN) as proxy:
        pruned = await proxy.delete("/cmd/prune", params={"type": "pattern", "expr": "team/app"}, headers=JSON_ONLY)
        assert pruned.json()["count"] == 1  # the proxy's own request carries the secret
