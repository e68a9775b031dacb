"""``swarmreg replication status``: the replication queue of an index node, per remote and
repository (docs/replication.md). A framework-free client of the index's admin route
(swarmreg.index.wire.ADMIN_REPLICATION), through IndexClient.

Exit status 0 when the index answered, 1 when it refused or could not be reached (one line on
standard error), 2 for options that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from swarmreg.errors import SwarmregError
from swarmreg.index.client import IndexClient
from swarmreg.proxy.admin_text import SHORT_DIGEST, columns

# The devcluster's index (index.listen of its herd).
DEFAULT_INDEX = "http://127.0.0.1:15004"
# -1: every repository with entries queued.
UNLIMITED = -1


def add_replication_commands(commands: Any) -> None:
    """The ``replication`` command of ``swarmreg``, and its ``status``."""
    replication = commands.add_parser("replication", help="replication to other clusters ([[index.replicate]])")
    subcommands = replication.add_subparsers(dest="replication_command", required=True)
    status = subcommands.add_parser(
        "status", help="show the replication queue of an index node",
        description="Show what the index's replication queue holds, per remote cluster and repository: how many "
                    "tags are pending, when the oldest was recorded, and of the one sent next its attempts, when it "
                    "is tried next and why the last attempt failed. Every index node on one PostgreSQL database "
                    "shows the same queue.")
    status.add_argument("--index", metavar="URL", default=DEFAULT_INDEX,
                        help=f"the index's API (default: the devcluster's, {DEFAULT_INDEX}); https:// with [tls]")
    status.add_argument("--ca", metavar="FILE", help="the cluster CA (PEM) to verify an https index with")
    status.add_argument("--cert", metavar="FILE", help="a node certificate (PEM) to present: an index with [tls] "
                                                       "takes only clients with one from its CA")
    status.add_argument("--key", metavar="FILE", help="the certificate's private key (PEM)")
    status.add_argument("--count", metavar="N", type=int, default=UNLIMITED,
                        help="list at most N repositories (default -1: all); the totals count every one")
    status.add_argument("--json", action="store_true", help="print the index's JSON instead of columns")


def run_replication(args: argparse.Namespace) -> int:
    """Run ``swarmreg replication ...``; returns the exit status."""
    logging.getLogger().addHandler(logging.NullHandler())  # the clients' log lines are not for this terminal
    try:
        context = _tls(args)
    except ValueError as error:
        print(f"swarmreg replication: {error}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or error
        print(f"swarmreg replication: cannot load --ca, --cert or --key: {reason}", file=sys.stderr)
        return 2
    if args.count < UNLIMITED:
        print("swarmreg replication: --count must be a whole number, or -1 for all", file=sys.stderr)
        return 2
    try:
        status = trio.run(_fetch, args.index, context, args.count)
    except SwarmregError as error:
        print(f"swarmreg replication: the index at {args.index}: {error.message}", file=sys.stderr)
        return 1
    except ValueError as error:  # an --index that is no URL
        print(f"swarmreg replication: --index {args.index!r}: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(status, indent=2) + "\n" if args.json else status_table(status))
    return 0


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if bool(args.cert) != bool(args.key):
        raise ValueError("--cert and --key go together")
    if not (args.ca or args.cert):
        return None
    context = ssl.create_default_context(cafile=args.ca or None)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    return context


async def _fetch(index: str, context: ssl.SSLContext | None, count: int) -> dict[str, Any]:
    async with IndexClient(index, tls=context, attempts=1) as client:
        return await client.replication_status(count=count)


def _reference(queue: Mapping[str, Any]) -> str:
    """``tag@alg:hex`` of the entry sent next, the hex shortened (the JSON has it whole)."""
    algorithm, _, hex_digits = str(queue["digest"]).partition(":")
    return f"{queue['tag']}@{algorithm}:{hex_digits[:SHORT_DIGEST]}"


def status_table(status: Mapping[str, Any]) -> str:
    """The status as two tables: one line per remote, then one per remote and repository queued."""
    remotes: Sequence[Mapping[str, Any]] = status.get("remotes", [])
    if not remotes:
        return "no [[index.replicate]] rules, and nothing queued\n"
    text = columns([["REMOTE", "RULE", "PENDING", "REPOSITORIES", "OLDEST"]] + [
        [remote["remote"], "yes" if remote["configured"] else "none", str(remote["pending"]),
         str(remote["repositories"]), remote["oldest"] or "-"] for remote in remotes])
    queues = [(remote["remote"], queue) for remote in remotes for queue in remote["queues"]]
    if queues:
        text += "\n" + columns([["REMOTE", "REPOSITORY", "PENDING", "OLDEST", "NEXT", "ATTEMPTS", "NEXT_ATTEMPT",
                                 "SENDING", "LAST_ERROR"]] + [
            [remote, queue["repository"], str(queue["pending"]), queue["oldest"], _reference(queue),
             str(queue["attempts"]), queue["next_attempt"], "yes" if queue["sending"] else "no",
             " ".join((queue["last_error"] or "-").split())] for remote, queue in queues])
    if status.get("truncated"):
        text += "(more repositories are queued: --count N shows more)\n"
    return text
