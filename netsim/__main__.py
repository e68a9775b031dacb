"""``python -m netsim run configs/netsim/<name>.toml [--mode auto|netns|loopback] [--json out.json]
[--plot out.png] [--workdir DIR]``, ``python -m netsim plot a.json b.json -o out.png`` and
``python -m netsim clean`` (remove every run's namespaces, links and processes), and
``python -m netsim model SCENARIO`` / ``python -m netsim model calibrate REPORT.json ...`` (the
flow-level model, netsim/model_cli.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from netsim import model_cli
from netsim.network import NetworkError, sweep
from netsim.report import plot, table, write_json
from netsim.runner import MODES, run_scenario
from netsim.scenario import Scenario, load_scenario
from swarmreg.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netsim", description="Load tests of real swarmreg swarms.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one scenario and report it")
    run.add_argument("scenario", type=Path)
    run.add_argument("--mode", choices=MODES, default="auto",
                     help="netns: a namespace per node, shaped by tc; loopback: 127.0.0.1 and libtorrent's "
                          "rate limits; auto (default): netns if this machine allows it, else loopback")
    run.add_argument("--json", type=Path, help="write every figure here")
    run.add_argument("--plot", type=Path, help="write the completion CDF and traffic plot here (PNG)")
    run.add_argument("--workdir", type=Path, help="keep the nodes' data and logs here (default: a temp dir)")
    plotting = commands.add_parser("plot", help="plot several runs' JSON files together")
    plotting.add_argument("runs", type=Path, nargs="+")
    plotting.add_argument("-o", "--output", type=Path, required=True)
    commands.add_parser("clean", help="remove the namespaces, links and processes of every run")
    model_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "model":
        return model_cli.main(args)
    if args.command == "plot":
        plot([json.loads(path.read_text()) for path in args.runs], args.output)
        return 0
    if args.command == "clean":
        print(f"removed what runs {trio.run(lambda: sweep(everything=True)) or 'none'} left")
        return 0
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as error:
        print(f"netsim: {error}", file=sys.stderr)
        return 2
    if refusal := scenario.runnable():
        print(f"netsim: {refusal}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"netsim-{scenario.name}-"))
    try:
        figures = trio.run(_until_signalled, scenario, work, args.mode)
    except NetworkError as error:
        print(f"netsim: {error}", file=sys.stderr)
        return 2
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(figures))
    if args.json:
        write_json(figures, args.json)
    if args.plot:
        plot([figures], args.plot)
    return 0 if not figures["failed"] else 1


async def _until_signalled(scenario: Scenario, work: Path, mode: str) -> dict[str, Any]:
    """The run, turned into a KeyboardInterrupt by SIGINT, SIGTERM or SIGHUP, so that its clean-up
    runs whichever way the run is stopped. SIGINT is received here too, not left to Python: a run
    started in the background by a shell without job control inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler for it."""
    result: dict[str, Any] = {}

    async def scenario_then_stop(nursery: trio.Nursery) -> None:
        result.update(await run_scenario(scenario, work, mode))
        nursery.cancel_scope.cancel()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scenario_then_stop, nursery)
            async for signum in signals:
                raise KeyboardInterrupt(f"signal {signum}")
    return result


if __name__ == "__main__":
    sys.exit(main())
