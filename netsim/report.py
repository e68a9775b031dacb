"""The run's report: a terminal table, a JSON file and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MiB = 1 << 20


def table(figures: dict[str, Any]) -> str:
    """A terminal table of one run's figures, each beside the lower bound T*."""
    bound = figures["lower_bound_s"]
    links = figures["links"]
    image = figures.get("image")
    pulled = "image" if image else "blob"
    sizes = ", ".join(f"{layer['size'] / MiB:g}" for layer in image["layers"]) if image else ""
    what = (f"image of {len(image['layers'])} layers ({sizes} = {image['size'] / MiB:g} MiB)" if image
            else f"blob {figures['blob_size'] / MiB:g} MiB")
    lines = [
        f"netsim {figures['scenario']} ({figures['mode']} mode; delay: {figures['delay']})",
        f"{figures['agents']} agents, {what}, links: origin up "
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
        f"{'origin egress':<28}{figures['origin_egress_x']:>10.2f} x  (of the {pulled})",
        f"{'bytes from other agents':<28}{100 * figures['share_from_agents']:>10.0f} %",
        f"{'pulls completed':<28}{figures['completed']:>12}",
    ]
    for failed in figures["failed"]:
        lines.append(f"  agent-{failed['agent']} failed: {failed['error']}")
    for layer in image["layers"] if image else ():
        if layer["p50_s"] is not None:
            label = f"layer {layer['size'] / MiB:g} MiB GET"
            lines.append(f"{label:<28}{layer['p50_s']:>10.2f} s p50, {layer['max_s']:.2f} s max")
    lines += _where_time_goes(figures)
    return "\n".join(lines)


def _where_time_goes(figures: dict[str, Any]) -> list[str]:
    of = " of the largest layer" if "image" in figures else ""
    lines = ["", f"where the time goes (median agent, seconds after its torrent{of} was added):"]
    milestones = figures.get("milestones_p50_s", {})
    labels = {"metainfo": "metainfo from the tracker (before)", "announced": "peers from the tracker",
              "first_piece": "first piece verified", "finished": "every piece here", "verified": "blob re-hashed"}
    lines += [f"  {labels[name]:<36}{seconds:>8.3f} s" for name, seconds in milestones.items()]
    cpu = figures.get("cpu")
    if cpu:
        share = cpu["machine_busy"]
        lines.append(f"  CPU: daemons {cpu['daemons_s']:.1f} s, netsim {cpu['netsim_s']:.1f} s in "
                     f"{cpu['wall_s']:.1f} s of wall time; the machine was {100 * share:.0f}% busy "
                     f"on {cpu['cores']} cores{' (CPU-bound)' if share > 0.9 else ''}")
        if "daemons_s_per_gib" in cpu:
            lines.append(f"  daemons' CPU per GiB the agents received: {cpu['daemons_s_per_gib']:.1f} core-seconds")
        lines.append(f"  idle daemons, before the pulls: {cpu['idle_daemons_cores']:.2f} cores"
                     + (f" ({cpu['idle_cores_per_daemon']:.4f} per daemon)" if "idle_cores_per_daemon" in cpu else ""))
    return lines


def write_json(figures: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(figures, indent=2))


def plot(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """A PNG: each run's completion-time CDF (in units of its T*), and bytes sent by the origin
    and by agents over time."""
    import matplotlib  # only the report needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (cdf, traffic) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        times = run["completion_s"]
        bound = run["lower_bound_s"] or 1.0
        xs = [0.0, *(t / bound for t in times)]
        ys = [(i + 1) / run["agents"] for i in range(-1, len(times))]
        cdf.step(xs, ys, where="post", label=f"{run['scenario']} ({run['mode'].split()[0]}, T* {bound:.1f} s)")
        samples = run["samples"]
        t = [s["t"] for s in samples]
        traffic.plot(t, [s["origin_up"] / MiB for s in samples], label=f"{run['scenario']}: origin sent")
        traffic.plot(t, [s["from_agents"] / MiB for s in samples], linestyle="--",
                     label=f"{run['scenario']}: agents got from agents")
    cdf.axvline(1.0, color="grey", linewidth=0.8)
    cdf.set(xlabel="completion time / T*", ylabel="agents done", title="completion time CDF", ylim=(0, 1.02))
    traffic.set(xlabel="seconds", ylabel="MiB", title="bytes served: origin vs agents")
    save_figure(figure, (cdf, traffic), path)


def save_figure(figure: Any, panels: Sequence[Any], path: Path) -> None:
    """Grid and legend on every panel, then the PNG; the figure is closed."""
    from matplotlib import pyplot

    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
