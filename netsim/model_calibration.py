"""The model's fitted constants and the measured runs they were fitted to (netsim/calibration.toml).

``python -m netsim model calibrate A.json B.json ...`` reads netsim reports, fits the constants
named in ``fit`` so that the model's p50 and p99 come closest to the measured ones (the largest
relative error of all of them, minimised), prints predicted against measured, and writes the file.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from netsim.model import Constants, Policy, Swarm, give_up, policy_from_settings, refusal, simulate
from netsim.stats import percentile
from swarmreg.config import ConfigError, structure

DEFAULT_PATH = Path(__file__).with_name("calibration.toml")
# The constants calibrate may change, and the values each is tried at (a coarse grid, then halved
# steps around the best).
SEARCH: dict[str, tuple[Any, ...]] = {
    "origin_piece_quota": (1, 2, 4, 8, 20),
    "have_delay_s": tuple(i * 0.1 for i in range(16)),
    "have_delay_hops": tuple(i * 0.1 for i in range(16)),
    "start_s": tuple(i * 0.25 for i in range(9)),
    "piece_gap_s": tuple(i * 0.02 for i in range(11)),
}


@attrs.frozen
class Measurement:
    """One measured netsim run, as the model sees it (bytes, bytes per second, seconds)."""

    scenario: str
    agents: int = attrs.field(validator=attrs.validators.ge(1))
    blob_size: int = attrs.field(validator=attrs.validators.ge(1))
    origin_up: int = attrs.field(validator=attrs.validators.ge(0))
    agent_up: int = attrs.field(validator=attrs.validators.ge(0))
    agent_down: int = attrs.field(validator=attrs.validators.ge(0))
    lower_bound_s: float = attrs.field(validator=attrs.validators.gt(0))
    p50_s: float = attrs.field(validator=attrs.validators.gt(0))
    p99_s: float = attrs.field(validator=attrs.validators.gt(0))
    origin_egress_x: float = 0.0
    # The median agent's first piece, after its torrent was added (0: not in the report).
    first_piece_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    settings: tuple[str, ...] = ()  # the agents' and the herd's --set overrides
    # An image run's layers (netsim run's image scenarios); empty: one blob of blob_size.
    layer_sizes: tuple[int, ...] = ()
    source: str = ""  # the report it came from
    measured: str = ""  # the report's date (YYYY-MM-DD)

    def swarm(self) -> Swarm:
        return Swarm(agents=self.agents, layer_sizes=self.layer_sizes or (self.blob_size,), origin_up=self.origin_up,
                     agent_up=self.agent_up, agent_down=self.agent_down)

    def policy(self) -> Policy:
        return policy_from_settings(self.settings)[0]


@attrs.frozen
class Calibration:
    constants: Constants
    measurements: tuple[Measurement, ...] = ()
    fit: tuple[str, ...] = ("origin_piece_quota", "have_delay_s")
    fitted: str = ""  # date of the fit
    commit: str = ""  # the commit the fit ran at
    max_error: float = 0.0  # the largest relative error of p50 and p99 over the measurements


def load(path: Path = DEFAULT_PATH) -> Calibration:
    """The calibration file; ConfigError names what is wrong."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read calibration {path}: {error}") from None
    calibration = structure(document, Calibration)
    unknown = set(calibration.fit) - set(SEARCH)
    if unknown:
        raise ConfigError(f"fit: cannot fit {', '.join(sorted(unknown))}; known: {', '.join(SEARCH)}")
    return calibration


def save(calibration: Calibration, path: Path = DEFAULT_PATH) -> None:
    header = ("# The model's fitted constants and the netsim runs they were fitted to: written by\n"
              "# `python -m netsim model calibrate REPORT.json ...` (docs/netsim.md, Model).\n")
    write_atomically(Path(path), header + tomli_w.dumps(attrs.asdict(calibration)))


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it: a killed run or a full disk
    leaves the old file whole, never half of the new one."""
    temporary = temporary_for(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def measurement_from_report(path: Path) -> Measurement:
    """A netsim run's JSON report (``netsim run --json``) as a Measurement."""
    try:
        report = json.loads(Path(path).read_text())
        links = report["links"]
        when = datetime.date.fromtimestamp(Path(path).stat().st_mtime).isoformat()
        measurement = Measurement(
            scenario=str(report["scenario"]), agents=int(report["agents"]), blob_size=int(report["blob_size"]),
            origin_up=int(links["origin_up"]), agent_up=int(links["agent_up"]),
            agent_down=int(links["agent_down"]), lower_bound_s=float(report["lower_bound_s"]),
            p50_s=float(report["p50_s"]), p99_s=float(report["p99_s"]),
            origin_egress_x=float(report.get("origin_egress_x", 0.0)),
            first_piece_s=float((report.get("milestones_p50_s") or {}).get("first_piece", 0.0)),
            settings=_settings(report.get("settings")), source=str(path), measured=when,
            layer_sizes=tuple(int(layer["size"]) for layer in (report.get("image") or {}).get("layers", ())))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a netsim report ({type(error).__name__}: {error})") from None
    if why := refusal(measurement.swarm(), measurement.policy(), measurement.lower_bound_s):
        raise ConfigError(f"{path}: {why}")
    return measurement


def _settings(value: Any) -> tuple[str, ...]:
    """A report's settings: a list of ``key=value``, or a table of such lists (agent, herd)."""
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(str(s) for group in value.values() for s in (group or ()))
    if isinstance(value, list):
        return tuple(str(s) for s in value)
    raise ValueError(f"settings: expected a list or a table of lists, got {value!r}")


@attrs.frozen
class Prediction:
    p50_s: float
    p99_s: float
    first_piece_s: float  # the median agent's
    origin_egress_x: float


def predict(measurement: Measurement, constants: Constants) -> Prediction:
    """The model's figures for a measured run's scenario."""
    result = simulate(measurement.swarm(), measurement.policy(), constants,
                      max_time=give_up(measurement.lower_bound_s))
    return Prediction(percentile(result.completion_s, 0.5), percentile(result.completion_s, 0.99),
                      percentile(result.first_piece_s, 0.5), result.origin_bytes / result.total_bytes)


def errors(measurement: Measurement, constants: Constants) -> tuple[float, float, float]:
    """Relative errors of the model's p50, p99 and median first piece (0 if not measured)."""
    predicted = predict(measurement, constants)
    first = predicted.first_piece_s / measurement.first_piece_s - 1 if measurement.first_piece_s else 0.0
    return predicted.p50_s / measurement.p50_s - 1, predicted.p99_s / measurement.p99_s - 1, first


def worst_error(measurements: Sequence[Measurement], constants: Constants) -> float:
    """The largest relative error of p50 and p99 over the measurements."""
    return max((max(abs(e50), abs(e99)) for e50, e99, _ in (errors(m, constants) for m in measurements)),
               default=0.0)


def _objective(measurements: Sequence[Measurement], constants: Constants) -> float:
    """What the fit minimises: the worst p50/p99 error, and a tenth of the worst first-piece error
    (it tells apart constants that fit p50 and p99 alike: an origin that rotates fast or slowly)."""
    found = [errors(m, constants) for m in measurements]
    return (max((max(abs(a), abs(b)) for a, b, _ in found), default=0.0)
            + 0.1 * max((abs(c) for _, _, c in found), default=0.0))


def fit(measurements: Sequence[Measurement], start: Constants, names: Sequence[str],
        progress: Callable[[str], None] = lambda _: None) -> tuple[Constants, float]:
    """Every combination of the named whole-number constants' grids, each with a coordinate search
    of the named real ones (their grid, then three rounds of halved steps around the best); the
    combination with the lowest objective."""
    whole = [n for n in names if isinstance(SEARCH[n][0], int)]
    real = [n for n in names if n not in whole]
    best, best_error = start, _objective(measurements, start)
    for combination in itertools.product(*(SEARCH[n] for n in whole)):
        trial, error = _search(measurements, attrs.evolve(start, **dict(zip(whole, combination, strict=True))), real)
        progress(f"  {_describe(trial, names)}: objective {100 * error:.1f}%")
        if error < best_error - 1e-4:
            best, best_error = trial, error
    return best, best_error


def _search(measurements: Sequence[Measurement], start: Constants, names: Sequence[str]) -> tuple[Constants, float]:
    best, best_error = start, _objective(measurements, start)
    step = {name: (SEARCH[name][1] - SEARCH[name][0]) for name in names}
    for name in names:  # the coarse grid first
        for value in SEARCH[name]:
            trial = attrs.evolve(best, **{name: value})
            if (error := _objective(measurements, trial)) < best_error - 1e-4:
                best, best_error = trial, error
    for _ in range(3):  # then finer steps around the best
        for name in names:
            step[name] /= 2
            for value in (getattr(best, name) - step[name], getattr(best, name) + step[name]):
                if value < 0:
                    continue
                trial = attrs.evolve(best, **{name: value})
                if (error := _objective(measurements, trial)) < best_error - 1e-4:
                    best, best_error = trial, error
    return best, best_error


def _describe(constants: Constants, names: Sequence[str]) -> str:
    return ", ".join(f"{name} = {getattr(constants, name):g}" for name in names)


def calibrate(reports: Sequence[Path], path: Path = DEFAULT_PATH,
              progress: Callable[[str], None] = print) -> Calibration:
    """Fit the constants to ``reports`` (netsim JSON reports), write ``path`` and return it."""
    measurements = tuple(measurement_from_report(report) for report in reports)
    previous = load(path) if Path(path).exists() else Calibration(constants=Constants())
    constants, _ = fit(measurements, previous.constants, previous.fit, progress)
    calibration = attrs.evolve(previous, constants=constants, measurements=measurements,
                               fitted=datetime.date.today().isoformat(), commit=_commit(),
                               max_error=worst_error(measurements, constants))
    save(calibration, path)
    return calibration


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def comparison(calibration: Calibration) -> str:
    """Predicted against measured, for every measurement of the calibration."""
    lines = [f"{'scenario':<11}{'agents':>7}{'T*':>7}  {'p50 measured/model/error':>27}  "
             f"{'p99 measured/model/error':>27}  {'first piece':>15}  {'origin egress':>14}"]
    for m in calibration.measurements:
        predicted, bound = predict(m, calibration.constants), m.lower_bound_s
        cells = [f"{measured / bound:>6.2f}x {model / bound:>6.2f}x {100 * (model / measured - 1):>+7.1f}%"
                 for measured, model in ((m.p50_s, predicted.p50_s), (m.p99_s, predicted.p99_s))]
        first = f"{m.first_piece_s:.2f}/{predicted.first_piece_s:.2f} s" if m.first_piece_s else "-"
        lines.append(f"{m.scenario:<11}{m.agents:>7}{bound:>6.1f}s  {cells[0]:>27}  {cells[1]:>27}  {first:>15}  "
                     f"{m.origin_egress_x:>5.2f}/{predicted.origin_egress_x:.2f}x")
    lines.append(f"fitted: {_describe(calibration.constants, calibration.fit)}; worst p50/p99 error "
                 f"{100 * calibration.max_error:.1f}%")
    return "\n".join(lines)
