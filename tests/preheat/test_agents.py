"""How the proxy finds and asks agents (issue 12, point 5): an agent's Hello gives the tracker its
blob API, the tracker lists live agents for the proxy role only, and only the proxy (the cluster
secret) may ask an agent to prefetch."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgpack
import pytest
import trio

from swarmreg.config import Address
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import list_agents
from swarmreg.tracker.wire import (
    MAX_AGENTS,
    TO_PEER,
    TO_TRACKER,
    AgentAddress,
    AgentsReply,
    AgentsRequest,
    Failure,
    Hello,
    ProtocolError,
    decode,
    encode,
)
from tests.conftest import RunningDaemon, blob_files, make_config, random_bytes, start_daemon
from tests.origin.helpers import assert_error
from tests.preheat.helpers import preheat, push_test_image, start_herd

SECRET = "s3cret-for-tests"
LIMIT = 64 << 10


@pytest.mark.parametrize("frame", [Hello(16002), AgentsRequest(3)])
def test_the_new_frames_reach_the_tracker(frame: object) -> None:
    assert decode(encode(frame), TO_TRACKER, LIMIT) == frame


def test_an_agents_reply_reaches_the_proxy_bounded() -> None:
    reply = AgentsReply(3, (AgentAddress("127.0.0.1", 16002), AgentAddress("::1", 17002)))
    assert decode(encode(reply), TO_PEER, LIMIT) == reply
    failed = AgentsReply(4, failure=Failure("UNAUTHORIZED", "no"))
    assert decode(encode(failed), TO_PEER, LIMIT) == failed
    many = msgpack.packb({"v": 1, "t": "agents_reply", "b": {
        "request_id": 1, "agents": [{"host": "10.0.0.1", "port": 1 + i % 60000} for i in range(MAX_AGENTS + 5)],
        "failure": None}})
    assert len(decode(many, TO_PEER, len(many)).agents) == MAX_AGENTS
    for body in [{"api_port": 0}, {"api_port": 70000}, {"api_port": "80"}, {}]:
        with pytest.raises(ProtocolError):
            decode(msgpack.packb({"v": 1, "t": "hello", "b": body}), TO_TRACKER, LIMIT)
    with pytest.raises(ProtocolError):  # a peer never gets a Hello, nor the tracker a reply
        decode(encode(Hello(1)), TO_PEER, LIMIT)


async def start_agent(nursery: trio.Nursery, herd: RunningDaemon, data_dir: Path, *overrides: str) -> RunningDaemon:
    roles = herd.ready["roles"]
    return await start_daemon(nursery, make_config(
        data_dir, "store.fsync=false", f"agent.tracker={roles['tracker']['ws']}",
        f"agent.index={roles['index']['http']}", *overrides), ["agent"])


async def test_only_the_secrets_holders_list_agents_and_ask_them_to_prefetch(nursery: trio.Nursery, tmp_path: Path):
    herd = await start_herd(nursery, tmp_path / "herd", f"cluster.secret={SECRET}")
    member = await start_agent(nursery, herd, tmp_path / "member", f"cluster.secret={SECRET}")
    # An agent without the secret still pulls (reads are open) but is never handed to the proxy.
    await start_agent(nursery, herd, tmp_path / "stranger")
    tracker = Address.parse(herd.ready["roles"]["tracker"]["ws"])
    member_api = Address.parse(member.ready["roles"]["agent"]["http"])
    with trio.fail_after(30):
        while not await list_agents(tracker, secret=SECRET):
            await trio.sleep(0.1)
    await trio.sleep(0.5)  # the stranger's Hello has arrived by now too
    assert await list_agents(tracker, secret=SECRET) == (AgentAddress("127.0.0.1", member_api.port),)
    for secret in ("", "wrong"):
        with pytest.raises(SwarmregError) as refused:
            await list_agents(tracker, secret=secret)
        assert refused.value.code.code == "UNAUTHORIZED"

    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, "team/app", "v1", [random_bytes(2 << 20, seed=5)])
    layer = next(d for d, size in image.blobs.items() if size == 2 << 20)
    path = f"/namespace/team%2Fapp/blobs/{layer}/prefetch"
    async with httpx.AsyncClient(base_url=member.url("agent"), timeout=60) as agent:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}):
            refused_prefetch = await agent.post(path, headers=headers)
            assert_error(refused_prefetch, 401, "UNAUTHORIZED")
            assert SECRET not in refused_prefetch.text
        assert_error(await agent.get(path), 404, "JOB_UNKNOWN")  # nothing was started
        assert layer.removeprefix("sha256:") not in blob_files(Path(member.config.data_dir))
        bearer = {"Authorization": f"Bearer {SECRET}"}
        assert_error(await agent.post("/namespace/team%2Fapp/blobs/sha256:nope/prefetch", headers=bearer),
                     400, "DIGEST_INVALID")
        assert_error(await agent.post(f"/namespace/..%2Fx/blobs/{layer}/prefetch", headers=bearer), 400, "NAME_INVALID")
        started = await agent.post(path, headers=bearer)
        assert started.status_code == 202, started.text
        assert started.json()["digest"] == layer and started.json()["state"] in ("running", "done")
        with trio.fail_after(30):
            while (state := (await agent.get(path)).json())["state"] == "running":
                await trio.sleep(0.1)
        assert state == {"namespace": "team/app", "digest": layer, "state": "done"}
        assert blob_files(Path(member.config.data_dir))[layer.removeprefix("sha256:")] == 2 << 20
        # Asked again for a blob it holds: done at once.
        assert (await agent.post(path, headers=bearer)).json()["state"] == "done"
    # The proxy sends the secret: a preheat of every agent the tracker lists works.
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        doc = await preheat(proxy, [image.reference], agents="all")
    assert doc["status"] == "done" and doc["agents"]["asked"] == 1, doc
    assert {d.removeprefix("sha256:") for d in image.blobs} <= set(blob_files(Path(member.config.data_dir)))


async def test_an_agent_whose_prefetch_fails_says_why(nursery: trio.Nursery, tmp_path: Path):
    herd = await start_herd(nursery, tmp_path / "herd")
    agent = await start_agent(nursery, herd, tmp_path / "agent")
    path = f"/namespace/team%2Fapp/blobs/sha256:{'ab' * 32}/prefetch"
    async with httpx.AsyncClient(base_url=agent.url("agent"), timeout=60) as client:
        assert (await client.post(path)).status_code == 202  # an open cluster: anyone may ask
        with trio.fail_after(30):
            while (state := (await client.get(path)).json())["state"] == "running":
                await trio.sleep(0.1)
    assert state["state"] == "failed" and state["error"], state
    assert "Traceback" not in state["error"] and "/tmp" not in state["error"]
    assert (await client_get_health(agent)) == 200


async def client_get_health(daemon: RunningDaemon) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(daemon.url("agent") + "/health")).status_code
