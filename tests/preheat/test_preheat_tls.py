"""Preheat on a cluster with mutual TLS: the proxy lists agents over wss with its proxy-role
certificate; agents' blob APIs are plain HTTP, so prefetching needs the cluster secret too."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import Address
from swarmreg.devcluster import make_dev_certs, tls_overrides
from swarmreg.errors import SwarmregError
from swarmreg.tracker.client import list_agents
from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.preheat.helpers import HERD, preheat, push_test_image
from tests.tls.conftest import client_context

SECRET = "tls-and-a-secret"


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    make_dev_certs(directory, {"herd": tuple(HERD), "agent": ("agent",)})
    return directory


@pytest.mark.parametrize("secret", [SECRET, ""])
async def test_a_tls_cluster_preheats_agents_with_the_secret_only(nursery: trio.Nursery, tmp_path: Path,
                                                                  certs: Path, secret: str):
    extra = [f"cluster.secret={secret}"] if secret else []
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd"), *extra), HERD)
    tracker = Address.parse(herd.ready["roles"]["tracker"]["ws"])
    agent = await start_daemon(nursery, make_config(
        tmp_path / "agent", *tls_overrides(certs, "agent"), *extra, f"agent.tracker={tracker}",
        f"agent.index={herd.ready['roles']['index']['http']}"), ["agent"])
    with trio.fail_after(30):  # listed for the proxy's certificate...
        while not await list_agents(tracker, tls=client_context(certs, "herd")):
            await trio.sleep(0.1)
    with pytest.raises(SwarmregError) as refused:  # ...not for an agent's
        await list_agents(tracker, tls=client_context(certs, "agent"))
    assert refused.value.code.code == "DENIED"
    async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60) as proxy:
        image = await push_test_image(proxy, "secure/app", "1", [random_bytes(1 << 20, seed=1)])
        doc = await preheat(proxy, [image.reference], agents=1)
    held = set(blob_files(Path(agent.config.data_dir)))
    wanted = {digest.removeprefix("sha256:") for digest in image.blobs}
    assert doc["blobs"]["done"] == len(image.blobs)  # the origin seeds either way
    if secret:
        assert doc["status"] == "done", doc
        assert wanted <= held
    else:
        assert doc["status"] == "failed" and doc["agents"]["blobs"]["failed"] == len(image.blobs)
        assert "refused this node's cluster credentials" in json.dumps(doc["errors"])
        assert not wanted & held
