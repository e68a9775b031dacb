"""Upstream names a hostile client chooses (issue 12): the herd looks up every name sent in ``?ns=``
or the path, and a slow DNS server must cost those requests only, not the daemon's file I/O."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import make_config, random_bytes, start_daemon
from tests.proxy.helpers import digest_of, push_image

LOOKUP_SECONDS = 5.0  # what a lookup costs with an unreachable DNS server (glibc waits 5 s a try)


async def test_slow_lookups_of_chosen_names_leave_the_file_threads_alone(
        nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured on a devcluster with this machine's resolver: 300 requests with distinct bogus ?ns=
    # names made a cached 4 MB blob read from the proxy take 26 s: each lookup held one of trio's
    # 40 default worker threads, the ones every file read and write waits for.
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        flags = args[4] if len(args) > 4 else kwargs.get("flags", 0)
        if name.endswith(".invalid") and not flags & socket.AI_NUMERICHOST:
            time.sleep(LOOKUP_SECONDS)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    herd = await start_daemon(nursery, make_config(tmp_path / "herd"), ["origin", "tracker", "index", "proxy"])
    layer = random_bytes(1 << 20, seed=12)
    try:
        async with httpx.AsyncClient(base_url=herd.url("proxy"), timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as client:
            await push_image(client, "team/app", "v1", [layer])
            answers: list[int] = []

            async def bogus(i: int) -> None:
                response = await client.get("/v2/x/manifests/v1", params={"ns": f"h{i}.invalid"})
                answers.append(response.status_code)

            async with trio.open_nursery() as flood:
                for i in range(60):
                    flood.start_soon(bogus, i)
                await trio.sleep(0.5)  # every lookup has started
                started = trio.current_time()
                with trio.fail_after(LOOKUP_SECONDS - 1):
                    response = await client.get(f"/v2/team/app/blobs/{digest_of(layer)}")
                assert response.status_code == 200 and response.content == layer
                assert trio.current_time() - started < LOOKUP_SECONDS - 1
            assert answers == [503] * 60  # each is UPSTREAM_UNAVAILABLE, none is left hanging
    finally:
        await herd.stop()
