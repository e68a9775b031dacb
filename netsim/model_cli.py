"""``python -m netsim model SCENARIO [--hosts N ...] [--scale 100,300,...] [--json OUT] [--plot OUT.png]``
and ``python -m netsim model calibrate REPORT.json ...``: the flow-level model's command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from netsim import model_calibration, model_report
from netsim.model import GIVE_UP_BOUNDS, Constants, figures, give_up, policy_from_settings, refusal, simulate, swarm_of
from netsim.model_calibration import write_atomically
from netsim.scenario import load_scenario
from swarmreg.config import ConfigError

MAX_HOSTS = 100_000


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "model", help="predict a scenario with the flow-level model (or `model calibrate REPORT.json ...`)")
    parser.add_argument("target", nargs="+", metavar="SCENARIO | calibrate REPORT.json ...")
    parser.add_argument("--hosts", type=int, nargs="+", help="agents to model instead of the scenario's")
    parser.add_argument("--scale", help="comma-separated host counts, e.g. 100,300,1000,3000,10000")
    parser.add_argument("--json", type=Path, help="write every prediction here")
    parser.add_argument("--plot", type=Path, help="write the p50/p99/p99.9-by-hosts plot here (PNG)")
    parser.add_argument("--calibration", type=Path, default=model_calibration.DEFAULT_PATH,
                        help="fitted constants (default: netsim/calibration.toml)")
    parser.add_argument("--constant", action="append", default=[], metavar="NAME=VALUE",
                        help="override a fitted constant, e.g. have_delay_s=0 (what-ifs)")
    parser.add_argument("--seed", type=int, default=1, help="the random choices' seed (0 or more)")


def main(args: argparse.Namespace) -> int:
    try:
        if args.target[0] == "calibrate":
            return _calibrate([Path(p) for p in args.target[1:]], args.calibration)
        if len(args.target) != 1:
            raise ConfigError("give one scenario (or `calibrate REPORT.json ...`)")
        if args.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, got {args.seed}")
        prediction = predict(Path(args.target[0]), _hosts(args), args.calibration, args.seed, args.constant)
    except ConfigError as error:
        print(f"netsim model: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the calibration file could not be written
        print(f"netsim model: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    print(model_report.table(prediction))
    try:
        if args.json:
            write_atomically(args.json, json.dumps(prediction, indent=2))
        if args.plot:
            model_report.plot(prediction, args.plot)
    except OSError as error:
        print(f"netsim model: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


def _hosts(args: argparse.Namespace) -> list[int] | None:
    hosts = list(args.hosts or [])
    if args.scale:
        try:
            hosts += [int(part) for part in args.scale.split(",")]
        except ValueError:
            raise ConfigError(f"--scale: expected comma-separated host counts, got {args.scale!r}") from None
    bad = [h for h in hosts if not 1 <= h <= MAX_HOSTS]
    if bad:
        raise ConfigError(f"host counts must be 1 to {MAX_HOSTS}, got {bad}")
    return sorted(set(hosts)) or None


def predict(path: Path, hosts: list[int] | None, calibration_path: Path, seed: int = 1,
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The model's figures for the scenario at ``path``, for each host count (default: its agents),
    with the calibration's constants but ``overrides`` (``name=value``)."""
    scenario = load_scenario(path)
    if scenario.arrivals.mode != "all" or scenario.faults:
        raise ConfigError(f"{path}: the model pulls with every agent arriving at once and nothing failing "
                          f"(arrivals.mode = \"all\", no faults)")
    calibration = model_calibration.load(calibration_path)
    constants = _override(calibration.constants, overrides)
    policy, ignored = policy_from_settings((*scenario.agent_settings, *scenario.herd_settings))
    runs = []
    for count in hosts or [scenario.agents]:
        sized = attrs.evolve(scenario, agents=count)
        swarm = swarm_of(sized)
        if why := refusal(swarm, policy, sized.lower_bound()):
            raise ConfigError(f"{path}: {why}")
        started = time.monotonic()
        result = simulate(swarm, policy, constants, seed=seed, max_time=give_up(sized.lower_bound()))
        if result.completion_s[-1] == float("inf"):
            raise ConfigError(f"{path}: {sum(t == float('inf') for t in result.completion_s)} of {count} agents had "
                              f"not finished after {GIVE_UP_BOUNDS} T*: the modelled swarm stalls")
        row: dict[str, Any] = {"hosts": count, "lower_bound_s": sized.lower_bound(),
                               **figures(result, sized.lower_bound()),
                               "neighbours": result.neighbours, "runtime_s": time.monotonic() - started}
        runs.append(row)
    layers = (scenario.blob_size,) if scenario.image is None else scenario.image.layers
    return {"scenario": scenario.name, "agents": scenario.agents, "layers": len(layers),
            "layer_size": max(layers), "origins": scenario.origins, "piece_length": result.piece_length,
            "links": attrs.asdict(scenario.links), "policy": attrs.asdict(policy),
            "constants": attrs.asdict(constants), "overrides": list(overrides),
            "calibration": str(calibration_path),
            "ignored_settings": ignored,
            "reference": attrs.asdict(scenario.reference) if scenario.reference else None, "runs": runs}


def _override(constants: Constants, overrides: Sequence[str]) -> Constants:
    changes: dict[str, Any] = {}
    for override in overrides:
        name, _, value = override.partition("=")
        field = attrs.fields_dict(Constants).get(name.strip())
        try:
            if field is None:
                raise ValueError(f"no constant {name.strip()!r}; known: {', '.join(attrs.fields_dict(Constants))}")
            changes[field.name] = int(value) if field.type in (int, "int") else float(value)
            if not math.isfinite(changes[field.name]):
                raise ValueError("must be a finite number")
            attrs.evolve(constants, **changes)
        except ValueError as error:
            raise ConfigError(f"--constant {override}: {error}") from None
    return attrs.evolve(constants, **changes)


def _calibrate(reports: list[Path], path: Path) -> int:
    if not reports:
        raise ConfigError("calibrate: give the netsim reports (JSON) to fit to")
    print(f"fitting {path} to {len(reports)} report(s):")
    calibration = model_calibration.calibrate(reports, path)
    print(model_calibration.comparison(calibration))
    return 0
