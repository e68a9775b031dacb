"""``swarmreg status --proxy URL`` and the proxy's ``GET /cmd/status``: the proxy and every member of
the rings it uses, up or down, behind the admin API's authentication; exit status 3 when a node
is down."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from swarmreg.config import Address, load_config
from tests.cli.helpers import one_line_error, swarmreg
from tests.cluster.helpers import members_option
from tests.conftest import PORT_ZERO, free_port, make_config, start_daemon
from tests.proxy.admin_helpers import USERS, herd_config_text, table

PASSWORD = {"SWARMREG_PASSWORD": USERS["admin"]}


async def test_a_ring_of_two_origins_one_stopped(nursery: trio.Nursery, tmp_path: Path) -> None:
    members = [Address("127.0.0.1", free_port()) for _ in range(2)]
    ring = (members_option(members), "cluster.health_interval=0.5")
    origins = [await start_daemon(nursery, make_config(tmp_path / f"origin{i}", f"origin.listen={member}", *ring),
                                  ["origin"]) for i, member in enumerate(members)]
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(herd_config_text())
    proxy = await start_daemon(nursery, load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5", *ring],
                                                    data_dir=str(tmp_path / "proxy")), ["proxy", "index", "tracker"])
    url = proxy.url("proxy")
    status = ("status", "--proxy", url, "--user", "admin")

    up = await swarmreg(tmp_path, *status, **PASSWORD)
    assert up.returncode == 0, up.stderr.decode()
    rows = table(up.stdout.decode())
    assert rows[0] == ["ROLE", "ADDRESS", "STATE", "CHECKED", "FAILURES", "REASON"]
    assert [(row[0], row[2]) for row in rows[1:]] == [
        ("proxy", "up"), ("origin", "up"), ("origin", "up"), ("index", "up"), ("tracker", "up")]
    assert {row[1] for row in rows if row[0] == "origin"} == {str(m) for m in members}
    assert rows[1][1] == url.removeprefix("http://")

    await origins[1].stop()
    with trio.fail_after(15):
        while (down := await swarmreg(tmp_path, *status, **PASSWORD)).returncode == 0:
            await trio.sleep(0.2)
    assert down.returncode == 3, down.stderr.decode()
    assert down.stderr.decode() == f"swarmreg status: 1 of 5 nodes down: origin {members[1]}\n"
    states = {row[1]: row for row in table(down.stdout.decode())[1:]}
    assert states[str(members[1])][2] == "down" and int(states[str(members[1])][4]) >= 1
    assert "ConnectError" in " ".join(states[str(members[1])][5:]), "the reason"
    assert states[str(members[0])][2] == "up"

    as_json = await swarmreg(tmp_path, *status, "--json", **PASSWORD)
    assert as_json.returncode == 3
    nodes = json.loads(as_json.stdout)["nodes"]
    [stopped] = [node for node in nodes if node["address"] == str(members[1])]
    assert stopped["state"] == "down" and stopped["checked"].endswith("Z") and stopped["role"] == "origin"

    # The admin API's authentication: anonymous is asked to sign in, a user without admin refused.
    assert "UNAUTHORIZED" in one_line_error(await swarmreg(tmp_path, "status", "--proxy", url), 1)
    carol = await swarmreg(tmp_path, "status", "--proxy", url, "--user", "carol", SWARMREG_PASSWORD=USERS["carol"])
    assert "DENIED" in one_line_error(carol, 1)
    async with httpx.AsyncClient(base_url=url, auth=("admin", USERS["admin"])) as client:
        text = await client.get("/cmd/status")
        assert text.status_code == 200 and text.text.startswith("ROLE")
        assert (await client.get("/cmd/status", params={"verbose": "1"})).status_code == 400


async def test_one_daemon_with_every_role(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Without [cluster], the roles' own addresses: rings of one member that nothing probes on a
    schedule, probed when asked; the proxy's own tracker is checked with a websocket handshake."""
    access = 'proxy.access=[{user="anonymous", repositories=".*", actions=["pull", "admin"]}]'
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", access), ["origin", "tracker", "index", "proxy"])
    done = await swarmreg(tmp_path, "status", "--proxy", herd.url("proxy"))
    assert done.returncode == 0, done.stderr.decode()
    rows = {row[0]: row for row in table(done.stdout.decode())[1:]}
    assert set(rows) == {"proxy", "origin", "tracker", "index"}
    assert rows["tracker"][1] == herd.ready["roles"]["tracker"]["ws"] and rows["tracker"][2] == "up"
    assert all(row[3] != "-" for row in rows.values()), "each was checked, and says when"
    assert "cannot reach the proxy" in one_line_error(await swarmreg(tmp_path, "status", "--proxy",
                                                                     "http://127.0.0.1:1"), 1)


async def test_a_dns_ring_whose_name_has_no_records(nursery: trio.Nursery, tmp_path: Path) -> None:
    access = 'proxy.access=[{user="anonymous", repositories=".*", actions=["pull", "admin"]}]'
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", access, "cluster.trackers=trackers.invalid:1"),
                              ["origin", "index", "proxy"])
    done = await swarmreg(tmp_path, "status", "--proxy", herd.url("proxy"))
    assert done.returncode == 3, done.stderr.decode()
    [tracker] = [row for row in table(done.stdout.decode()) if row[0] == "tracker"]
    assert tracker[:3] == ["tracker", "trackers.invalid:1", "down"]
    assert " ".join(tracker[5:]) == "its name resolves to no member"
