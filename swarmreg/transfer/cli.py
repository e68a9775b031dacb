"""The ``swarmreg blob push`` and ``swarmreg blob pull`` subcommands (docs/cli.md). Exit status
0 on success, 1 when the transfer failed (one line on standard error: run the same command again
to resume), 2 for options or files that cannot be used, 130 when interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from typing import Any

from swarmreg.config import parse_size
from swarmreg.errors import SwarmregError
from swarmreg.names import validate_namespace
from swarmreg.transfer.common import INTERRUPTED, USAGE, Reasons, TransferError, client_tls, endpoint

# The cluster secret for an origin that checks writers ([cluster] secret), when --secret-file is not given.
SECRET_VARIABLE = "SWARMREG_CLUSTER_SECRET"
DEFAULT_NAMESPACE = "default"
# Each PATCH of a push carries this much: an interrupted push loses at most one chunk's bytes.
DEFAULT_CHUNK = "8MiB"
MIN_CHUNK = 64 << 10


def add_blob_commands(commands: Any) -> None:
    """``swarmreg blob push`` and ``swarmreg blob pull``."""
    blob = commands.add_parser("blob", help="push a file into an origin, or pull a blob from an agent",
                               description="Move one blob by hand, resumably, with a progress bar on a terminal "
                                           "(plain lines otherwise).")
    blob_commands = blob.add_subparsers(dest="blob_command", required=True)

    push = blob_commands.add_parser(
        "push", help="upload FILE to an origin (Kraken's upload API), resumable",
        description="Hash FILE, then upload it in chunks to the origin under its sha256 digest, which is printed "
                    "on standard output. Interrupted, the same command run again continues from where the origin "
                    "stands (the session is recorded under $XDG_STATE_HOME/swarmreg). A blob the origin has is "
                    "not uploaded.")
    push.add_argument("file", metavar="FILE")
    push.add_argument("--origin", metavar="URL", required=True, help="the origin's HTTP port, http[s]://HOST:PORT")
    push.add_argument("--namespace", metavar="NS", default=DEFAULT_NAMESPACE,
                      help=f"the blob's namespace, which picks the origin's backend (default: {DEFAULT_NAMESPACE})")
    push.add_argument("--chunk-size", metavar="SIZE", default=DEFAULT_CHUNK,
                      help=f"bytes per PATCH, e.g. 8MiB (default {DEFAULT_CHUNK}): at most this much is sent again "
                           "after an interruption")
    push.add_argument("--secret-file", metavar="FILE",
                      help=f"a file holding the cluster secret (default: ${SECRET_VARIABLE}), for an origin that "
                           "checks writers")
    push.add_argument("--ca", metavar="FILE", help="a PEM CA bundle to verify an https origin with")
    push.add_argument("--cert", metavar="FILE", help="a client certificate (PEM) for an https origin, with a role "
                                                     "that may upload (swarmreg certs issue NAME --roles proxy)")
    push.add_argument("--key", metavar="FILE", help="the client certificate's key (default: in --cert)")
    push.set_defaults(blob=_push)

    pull = blob_commands.add_parser(
        "pull", help="download a blob from an agent, verified, resumable",
        description="Stream the blob from the agent's blob API, verifying it against DIGEST. With -o FILE the "
                    "bytes go to FILE.part, renamed to FILE once verified; interrupted, the same command run "
                    "again continues FILE.part (Range). Without -o (or -o -), to standard output.")
    pull.add_argument("digest", metavar="DIGEST", help="sha256:<64 hex digits> or sha512:<128 hex digits>")
    pull.add_argument("--agent", metavar="URL", required=True, help="the agent's blob port, http://HOST:PORT")
    pull.add_argument("--namespace", metavar="NS", default=DEFAULT_NAMESPACE,
                      help=f"the blob's namespace (default: {DEFAULT_NAMESPACE})")
    pull.add_argument("-o", "--output", metavar="FILE", help="write the blob here ('-' or none: standard output)")
    pull.add_argument("--timeout", metavar="SECONDS", type=float, default=300.0,
                      help="give up when the agent sends nothing for this long (default 300)")
    pull.set_defaults(blob=_pull)


def _secret(args: argparse.Namespace) -> str:
    if not args.secret_file:
        return os.environ.get(SECRET_VARIABLE, "").strip()
    try:
        with open(args.secret_file, encoding="utf-8") as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise TransferError(f"cannot read --secret-file: {getattr(error, 'strerror', None) or error}", USAGE) from None


def _push(args: argparse.Namespace) -> int:
    from swarmreg.origin.client import OriginClient
    from swarmreg.transfer.push import run_push

    member, https = endpoint(args.origin, "--origin")
    try:
        chunk: int = parse_size(args.chunk_size)
    except ValueError:
        chunk = 0
    if chunk < MIN_CHUNK:
        raise TransferError(f"--chunk-size must be a size of at least 64KiB (e.g. 8MiB), not {args.chunk_size!r}",
                            USAGE)
    if (args.ca or args.cert) and not https:
        raise TransferError("--ca and --cert are for an https origin", USAGE)
    tls = client_tls(args.ca, args.cert, args.key) if https else None
    connect = partial(OriginClient, member, tls=tls, secret=_secret(args))
    try:
        return run_push(args.file, args.origin, connect, member, args.namespace, chunk)
    except TransferError as error:
        if error.unreachable and https and not args.cert:  # the handshake's refusal reads as a hang-up
            error.hint = "an origin on [tls] takes only clients with a cluster certificate (--cert, --key)"
        raise


def _pull(args: argparse.Namespace) -> int:
    from swarmreg.agent.client import AgentClient
    from swarmreg.transfer.pull import run_pull

    member, https = endpoint(args.agent, "--agent")
    if https:
        raise TransferError("an agent's blob port is plain HTTP: --agent http://HOST:PORT", USAGE)
    if not args.timeout > 0:
        raise TransferError("--timeout must be a positive number of seconds", USAGE)
    connect = partial(AgentClient, member, timeout=args.timeout)
    return run_pull(args.digest, args.agent, connect, args.namespace, args.output)


def run_blob(args: argparse.Namespace) -> int:
    """Run ``blob push`` or ``blob pull``; returns the exit status."""
    # The clients log what they do not expect, for a daemon's log; here the one-line error says it.
    reasons = Reasons()
    logger = logging.getLogger("swarmreg")
    logger.addHandler(reasons)
    logger.propagate = False
    command = f"swarmreg blob {args.blob_command}"
    try:
        try:
            validate_namespace(args.namespace)
        except SwarmregError:
            raise TransferError(f"--namespace {args.namespace!r} is not a namespace (e.g. library/app)",
                                USAGE) from None
        status: int = args.blob(args)
        return status
    except TransferError as error:
        print(f"{command}: {error.line(reasons)}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(f"{command}: interrupted: run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
