"""What netsim's tests share: whether namespaces work here, and what a run left behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from netsim.network import unavailable

NETNS = unavailable()
needs_netns = pytest.mark.skipif(NETNS is not None, reason=f"network namespaces: {NETNS}")


def leftovers(owner: int) -> list[str]:
    """Namespaces, bridges and daemon processes a run with pid ``owner`` left behind."""
    names = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
             if n.startswith(f"netsim-{owner}-")]
    names += [n for n in os.listdir("/sys/class/net") if n == f"nsbr{owner}" or n.startswith(f"ns{owner}v")]
    ps = subprocess.run(["pgrep", "-f", f"netsim-{owner}-"], capture_output=True, text=True).stdout.split()
    return names + [f"pid {pid}" for pid in ps]
