"""The run's report: a terminal table and a JSON file (the PNG plot is not built yet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MiB = 1 << 20


def table(figures: dict[str, Any]) -> str:
    """A terminal table of one run's figures, each beside the lower bound T*."""
    bound = figures["lower_bound_s"]
    links = figures["links"]
    lines = [
        f"netsim {figures['scenario']} ({figures['mode']} mode; delay: {figures['delay']})",
        f"{figures['agents']} agents, blob {figures['blob_size'] / MiB:g} MiB, links: origin up "
        f"{links['origin_up'] / MiB:g} MiB/s, agents up {links['agent_up'] / MiB:g} / down "
        f"{links['agent_down'] / MiB:g} MiB/s",
        f"lower bound T* = {bound:.2f} s",
        "",
        f"{'measure':<28}{'value':>12}{'vs T*':>10}",
    ]
    for name in ("p50", "p90", "p99", "max"):
        if f"{name}_s" in figures:
            ratio = figures[f"{name}_vs_bound"]
            lines.append(f"{name + ' completion':<28}{figures[f'{name}_s']:>10.2f} s"
                         f"{'' if ratio is None else f'{ratio:>9.2f}x'}")
    lines += [
        f"{'origin egress':<28}{figures['origin_egress_x']:>10.2f} x  (of the blob)",
        f"{'bytes from other agents':<28}{100 * figures['share_from_agents']:>10.0f} %",
        f"{'pulls completed':<28}{figures['completed']:>12}",
    ]
    for failed in figures["failed"]:
        lines.append(f"  agent-{failed['agent']} failed: {failed['error']}")
    return "\n".join(lines)


def write_json(figures: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(figures, indent=2))
