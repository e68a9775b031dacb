"""The command line: ``swarmreg daemon``, ``config show``, ``passwd``, ``certs``, ``devcluster``,
``containerd-config``, ``load``, the admin API's ``list``, ``prune``, ``gc`` and ``status``, ``replication status``,
and ``blob push`` / ``blob pull``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from swarmreg.config import Config, ConfigError, dump_config, load_config
from swarmreg.logs import setup_logging


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--data-dir", metavar="DIR", help="where blobs and state live (overrides data_dir)")
    parser.add_argument("--set", metavar="KEY.PATH=VALUE", action="append", default=[], dest="overrides",
                        help="override one configuration value (a TOML literal, else a string); repeatable")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmreg", description="A peer-to-peer Docker/OCI registry.")
    commands = parser.add_subparsers(dest="command", required=True)

    daemon = commands.add_parser("daemon", help="run the enabled roles in one process")
    daemon.add_argument("--roles", required=True, help="comma-separated: agent,origin,tracker,proxy,index")
    _config_arguments(daemon)
    daemon.add_argument("--ready-file", metavar="PATH",
                        help="write a JSON document of every bound address once all roles are ready")
    daemon.add_argument("--log-format", choices=["text", "json"], help="overrides log.format")
    daemon.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    daemon.add_argument("--preload-images", metavar="FILE",
                        help="once the roles serve, make the herd fetch and seed every image of FILE (one image "
                             "reference a line, # comments; needs the proxy role, or the index and origin roles); "
                             "the daemon serves while it runs and logs how it goes")

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration as TOML")
    _config_arguments(show)

    passwd = commands.add_parser("passwd", help="hash a password for the [proxy.users] table")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")

    certs = commands.add_parser("certs", help="make a development CA and node certificates for [tls]")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_commands.add_parser("init", help="create a cluster CA (ca.pem, ca.key) in --dir")
    issue = certs_commands.add_parser("issue", help="issue NAME.pem and NAME.key, signed by the CA in --dir")
    issue.add_argument("name", help="the node's name (its certificate's common name and first SAN)")
    issue.add_argument("--san", action="append", default=[], metavar="NAME",
                       help="another DNS name or IP address the node is reached at (repeatable)")
    issue.add_argument("--roles", default="", metavar="ROLE,...",
                       help="the roles the node may write as on the internal ports (agent,origin,tracker,"
                            "proxy,index); none: the certificate reads only")
    for command in (init, issue):
        command.add_argument("--dir", default="certs", help="where the CA and certificates live (default: ./certs)")
        command.add_argument("--force", action="store_true", help="overwrite existing files")

    devcluster = commands.add_parser("devcluster", help="run a local cluster on the devcluster ports")
    devcluster.add_argument("--data-dir", metavar="DIR", help="keep the cluster's data here (default: a new temp dir)")
    devcluster.add_argument("--ha", action="store_true",
                            help="every role as a ring of its own processes: 3 origins (2 replicas), 3 trackers on "
                                 "Redis, 2 index nodes on PostgreSQL, the proxy and two agents; writes "
                                 "DATA_DIR/cluster.json (docs/cluster.md)")
    devcluster.add_argument("--second-cluster", action="store_true", dest="second_cluster",
                            help="with --ha: also a replica cluster (a herd on 18000-18004 and an agent on "
                                 "19000-19002) that receives every tag pushed to the HA cluster by replication")
    devcluster.add_argument("--tls", action="store_true",
                            help="mutual TLS between the nodes, with a dev CA made in the data directory")
    devcluster.add_argument("--upstream", metavar="URL", action="append", default=[],
                            help="pull through to this registry (repeatable), e.g. http://127.0.0.1:5000: "
                                 "its images are pulled as <host:port>/<repo> from the agents")
    devcluster.add_argument("--set-herd", metavar="KEY.PATH=VALUE", action="append", default=[], dest="set_herd",
                            help="a configuration value for the herd (with --ha: every node but the agents), as "
                                 "the daemon's --set takes it; repeatable")
    devcluster.add_argument("--set-agents", metavar="KEY.PATH=VALUE", action="append", default=[], dest="set_agents",
                            help="a configuration value for every agent (e.g. agent.cache.max_size=300MiB); repeatable")

    mirror = commands.add_parser("containerd-config",
                                 help="write containerd hosts.toml files that pull through an agent")
    mirror.add_argument("--agent", metavar="URL", help="the agent's registry port, e.g. http://127.0.0.1:5001")
    mirror.add_argument("--dir", metavar="DIR", required=True,
                        help="containerd's registry config_path, e.g. /etc/containerd/certs.d")
    mirror.add_argument("--registry", metavar="HOST", action="append", default=[],
                        help="a registry to mirror, HOST[:PORT] as in image references, or http[s]://HOST[:PORT] "
                             "to set the upstream's scheme (repeatable; none: DIR/_default for every registry)")
    mirror.add_argument("--restore", action="store_true",
                        help="put back the files earlier runs replaced and remove the ones they created "
                             "(only for the --registry hosts given, if any)")
    load = commands.add_parser(
        "load", help="make the herd fetch and seed a list of images (a preheat job on the proxy)",
        description="Post the images of --image-file (ociregistry's image list: one reference a line, blank lines "
                    "and # comments ignored) to the proxy's POST /preheat and follow the job. A reference with a "
                    "registry host (a dot or a colon in its first component, or localhost) is an upstream image, "
                    "pulled through and cached under <host[:port]>/<repo>; one without is a repository pushed to "
                    "swarmreg. The origin fetches and seeds every blob; with --agents, agents fetch them too. "
                    "Exits 0 when every image is loaded, 1 otherwise (the errors printed), 2 for a bad list.")
    load.add_argument("--image-file", metavar="FILE", required=True, help="the image list ('-': standard input)")
    load.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                      help="of a multi-platform image, load only this platform's layers (the index stays whole)")
    load.add_argument("--proxy", metavar="URL", default=DEFAULT_PROXY,
                      help=f"the proxy's registry port (default: the devcluster's, {DEFAULT_PROXY})")
    load.add_argument("--agents", metavar="N|all",
                      help="also have N agents (or all the tracker knows) fetch every blob ahead of a deploy")
    load.add_argument("--username", metavar="USER",
                      help="sign in to the proxy as USER; the password comes from the SWARMREG_PASSWORD variable")
    load.add_argument("--ca", metavar="FILE", help="a PEM CA bundle to verify an https proxy with")
    load.add_argument("--timeout", metavar="SECONDS", type=float, default=0,
                      help="give up (status 1) after this long; 0 (the default): wait for the job to end")
    from swarmreg.admin_cli import add_admin_commands
    from swarmreg.transfer.cli import add_blob_commands

    add_admin_commands(commands, DEFAULT_PROXY)
    from swarmreg.replication_cli import add_replication_commands

    add_replication_commands(commands)
    add_blob_commands(commands)
    return parser


# The devcluster's proxy (swarmreg.devcluster.DEVCLUSTER: proxy.listen of the herd).
DEFAULT_PROXY = "http://127.0.0.1:15000"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "passwd":
            return _passwd(args.stdin)
        if args.command == "certs":
            from swarmreg.tls.cli import run_certs

            return run_certs(args)
        if args.command == "devcluster" and args.ha:
            from swarmreg.devcluster_ha import run_ha_devcluster

            return run_ha_devcluster(args.data_dir, tls=args.tls, upstreams=args.upstream,
                                     herd=args.set_herd, agents=args.set_agents, second_cluster=args.second_cluster)
        if args.command == "devcluster" and args.second_cluster:
            print("swarmreg devcluster: --second-cluster needs --ha", file=sys.stderr)
            return 2
        if args.command == "devcluster":
            from swarmreg.devcluster import run_devcluster

            return run_devcluster(args.data_dir, tls=args.tls, upstreams=args.upstream,
                                  herd=args.set_herd, agents=args.set_agents)
        if args.command == "containerd-config":
            return _containerd_config(args)
        if args.command == "load":
            from swarmreg.load import run_load

            return run_load(args)
        if args.command == "blob":
            from swarmreg.transfer.cli import run_blob

            return run_blob(args)
        if args.command in ("list", "prune", "gc", "status"):
            from swarmreg.admin_cli import run_admin

            return run_admin(args)
        if args.command == "replication":
            from swarmreg.replication_cli import run_replication

            return run_replication(args)
        config = load_config(args.config, args.overrides, args.data_dir)
        if args.command == "config":
            sys.stdout.write(dump_config(config, redact=True))
            return 0
        return _run_daemon(args, config)
    except ConfigError as error:
        print(f"swarmreg: {error}", file=sys.stderr)
        return 2


def _run_daemon(args: argparse.Namespace, config: Config) -> int:
    from swarmreg.daemon import Daemon, DaemonError
    from swarmreg.errors import SwarmregError
    from swarmreg.index.store import SchemaError
    from swarmreg.malloc import tune_malloc

    config = attrs.evolve(config, log=attrs.evolve(
        config.log, format=args.log_format or config.log.format, level=args.log_level or config.log.level))
    setup_logging(config.log.format, config.log.level)
    if tuned := tune_malloc():  # before any thread starts: arenas are made per thread
        logging.getLogger("swarmreg.malloc").info("malloc: %s", ", ".join(f"{k}={v}" for k, v in tuned.items()))
    status = 0
    try:
        daemon = Daemon(config, args.roles.split(","), ready_file=args.ready_file,
                        preload_images=args.preload_images)
        trio.run(partial(daemon.run, handle_signals=True))
    # A SwarmregError this far out is a start that failed (an index database that does not answer).
    except* (DaemonError, OSError, SchemaError, SwarmregError) as group:
        for error in _leaves(group):
            print(f"swarmreg: {error}", file=sys.stderr)
        status = 2
    return status


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    return [leaf for error in group.exceptions
            for leaf in (_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])]


def _passwd(from_stdin: bool) -> int:
    import getpass

    from swarmreg.registry.auth import hash_password

    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass("password: ")
    if not password:
        print("swarmreg: an empty password is not allowed", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _containerd_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from swarmreg.mirror.containerd import MirrorConfigError, containerd_config_lines, restore_hosts, write_hosts

    directory = Path(args.dir).absolute()
    try:
        if args.restore:
            # --agent is not needed to undo, but the command that wrote the files is accepted as is.
            for path, done in restore_hosts(directory, args.registry):
                print(f"{done} {path}", file=sys.stderr)
            return 0
        if not args.agent:
            raise MirrorConfigError("--agent URL is required (or --restore)")
        for path in write_hosts(args.agent, directory, args.registry):
            print(f"wrote {path}", file=sys.stderr)
    except MirrorConfigError as error:
        print(f"swarmreg: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"swarmreg: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(containerd_config_lines(directory))
    return 0
