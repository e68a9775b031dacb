"""What the cluster tests share: ring options and waiting for a blob to arrive at an origin."""

from __future__ import annotations

from pathlib import Path

import trio

from swarmreg.config import Address
from tests.conftest import RunningDaemon, blob_files


def members_option(members: list[Address], key: str = "cluster.origins") -> str:
    return f"{key}=[" + ", ".join(f"'{m}'" for m in members) + "]"


async def holds(origin: RunningDaemon, digest: str) -> None:
    """Wait until ``origin`` has the blob in its store (replication runs in the background)."""
    with trio.fail_after(20):
        while digest.split(":")[1] not in blob_files(Path(origin.config.data_dir)):
            await trio.sleep(0.05)
