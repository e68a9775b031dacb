"""``python -m netsim run configs/netsim/<name>.toml [--json out.json] [--workdir DIR]``."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import trio

from netsim.report import table, write_json
from netsim.runner import run_scenario
from netsim.scenario import load_scenario
from swarmreg.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netsim", description="Load tests of real swarmreg swarms.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one scenario and report it")
    run.add_argument("scenario", type=Path)
    run.add_argument("--json", type=Path, help="write every figure here")
    run.add_argument("--workdir", type=Path, help="keep the nodes' data and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as error:
        print(f"netsim: {error}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"netsim-{scenario.name}-"))
    try:
        figures = trio.run(run_scenario, scenario, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(figures))
    if args.json:
        write_json(figures, args.json)
    return 0 if not figures["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
