"""The model's report: a terminal table of predictions against T* (and published figures), and
the scaling plot (p50, p99, p99.9 over host counts, in seconds and in units of T*)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netsim.report import save_figure

MEASURES = (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))


def table(prediction: dict[str, Any]) -> str:
    """One scenario's predictions, a row per host count."""
    reference = prediction.get("reference")
    lines = [f"netsim model {prediction['scenario']}: {prediction['layers']} x {prediction['layer_size'] / 2**20:g} MiB"
             f" (pieces {prediction['piece_length'] / 2**20:g} MiB), {prediction['origins']} origin(s); "
             f"constants from {prediction['calibration']}"
             + (f" but {', '.join(prediction['overrides'])}" if prediction.get("overrides") else "")]
    header = f"{'hosts':>7}{'T*':>8}" + "".join(f"{label:>16}" for _, label in MEASURES)
    lines += [header + f"{'origin egress':>15}{'neighbours':>12}{'runtime':>9}"]
    for row in prediction["runs"]:
        cells = "".join(f"{row[f'{name}_s']:>8.2f}s {row[f'{name}_vs_bound']:>5.2f}x" for name, _ in MEASURES)
        lines.append(f"{row['hosts']:>7}{row['lower_bound_s']:>7.2f}s{cells}{row['origin_egress_x']:>14.2f}x"
                     f"{row['neighbours']:>12}{row['runtime_s']:>8.1f}s")
    if reference:
        lines.append(f"\nagainst {reference['name']} ({reference['source']}):")
        for row in prediction["runs"]:
            cells = ", ".join(f"{label} {row[f'{name}_s']:.1f} s vs {reference[f'{name}_s']:g} s "
                              f"({row[f'{name}_s'] / reference[f'{name}_s']:.2f}x)"
                              for name, label in MEASURES[:3])
            lines.append(f"  {row['hosts']} hosts: {cells}")
    if prediction.get("ignored_settings"):
        lines.append(f"settings the model does not know (ignored): {', '.join(prediction['ignored_settings'])}")
    return "\n".join(lines)


def plot(prediction: dict[str, Any], path: Path) -> None:
    """A PNG: p50 / p99 / p99.9 against host count, in seconds and in units of T* (log x)."""
    import matplotlib  # only the plot needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot

    runs: Sequence[dict[str, Any]] = prediction["runs"]
    hosts = [row["hosts"] for row in runs]
    figure, (seconds, ratio) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for name, label in MEASURES[:3]:
        seconds.plot(hosts, [row[f"{name}_s"] for row in runs], marker="o", label=f"model {label}")
        ratio.plot(hosts, [row[f"{name}_vs_bound"] for row in runs], marker="o", label=f"model {label}")
    seconds.plot(hosts, [row["lower_bound_s"] for row in runs], color="grey", linestyle=":", label="T*")
    ratio.axhline(1.0, color="grey", linewidth=0.8)
    reference = prediction.get("reference")
    if reference:
        for (name, label), marker in zip(MEASURES[:3], ("s", "^", "v"), strict=True):
            seconds.scatter([prediction["agents"]], [reference[f"{name}_s"]], marker=marker,
                            color="black", zorder=3, label=f"{reference['name']} {label}")
    seconds.set(xscale="log", xlabel="hosts", ylabel="seconds", title=f"{prediction['scenario']}: completion time")
    ratio.set(xscale="log", xlabel="hosts", ylabel="completion / T*", title="against the lower bound T*")
    save_figure(figure, (seconds, ratio), path)
