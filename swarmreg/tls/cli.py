"""``swarmreg certs``: a development CA and node certificates for the [tls] section."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from swarmreg.authz import parse_roles
from swarmreg.tls.certs import KeyPair, issue, issue_peer, make_ca, node_names


def ca_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "ca.pem", directory / "ca.key"


def node_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.pem", directory / f"{name}.key"


def peer_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return node_paths(directory, f"{name}-peer")


def init_ca(directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Create the CA in ``directory`` (refusing to replace one unless ``force``)."""
    cert, key = ca_paths(directory)
    if cert.exists() and not force:
        raise FileExistsError(f"{cert} exists (use --force to replace the CA and every certificate it signed)")
    directory.mkdir(parents=True, exist_ok=True)
    make_ca().write(cert, key)
    return cert, key


def issue_node(directory: Path, name: str, sans: list[str], *, force: bool = False,
               roles: Sequence[str] = ()) -> tuple[Path, Path]:
    """Issue ``name``'s certificate (with ``roles``) and its peer-wire certificate from the CA in ``directory``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a usable node name")
    cert, key = node_paths(directory, name)
    if cert.exists() and not force:
        raise FileExistsError(f"{cert} exists (use --force to re-issue it)")
    ca = KeyPair.read(*ca_paths(directory))
    issue(ca, name, node_names(name) + sans, roles=roles).write(cert, key)
    issue_peer(ca, name).write(*peer_paths(directory, name))
    return cert, key


def run_certs(args: argparse.Namespace) -> int:
    """The ``certs`` subcommands; prints the [tls] lines to use."""
    directory = Path(args.dir)
    try:
        if args.certs_command == "init":
            cert, key = init_ca(directory, force=args.force)
            print(f"CA certificate: {cert}\nCA key (keep it off the nodes): {key}")
            return 0
        cert, key = issue_node(directory, args.name, args.san, force=args.force, roles=parse_roles(args.roles))
    except FileNotFoundError:
        print(f"swarmreg: no CA in {directory}: run `swarmreg certs init --dir {directory}` first", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as error:
        print(f"swarmreg: {error}", file=sys.stderr)
        return 2
    ca = ca_paths(directory)[0]
    peer_cert, peer_key = peer_paths(directory, args.name)
    roles = parse_roles(args.roles)
    print(f"# {cert.name}: {'roles ' + ','.join(roles) if roles else 'no roles: it reads only'}")
    print(f'[tls]\nca = "{ca.resolve()}"\ncert = "{cert.resolve()}"\nkey = "{key.resolve()}"\n'
          f'peer_cert = "{peer_cert.resolve()}"\npeer_key = "{peer_key.resolve()}"')
    return 0
