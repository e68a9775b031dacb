"""``swarmreg list``, ``swarmreg prune``, ``swarmreg gc`` and ``swarmreg status``: the proxy's admin
API from the command line (swarmreg.proxy.admin). A framework-free client: httpx only.

Credentials: ``--user`` with the password in ``SWARMREG_PASSWORD``, else the proxy's entry in a
docker config file (``auths``: base64 ``user:password`` in ``auth``, or ``username`` and
``password``), from ``--docker-config`` (the file or its directory), ``$DOCKER_CONFIG/config.json``
or ``~/.docker/config.json``; none: anonymous. As docker does, the first request goes without
credentials and the proxy's 401 says how to sign in: basic, or a bearer token from its realm
(``proxy.auth = "token"``). Exit status 0 on success, 1 when the proxy refuses or cannot be
reached (one line on standard error), 2 for options that cannot be used; ``status`` exits
NODE_DOWN when a node is down.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from swarmreg.durations import parse_duration
from swarmreg.proxy.admin_text import status_table
from swarmreg.proxy.wire import CMD_BLOBS, CMD_GC, CMD_IMAGES, CMD_MANIFESTS, CMD_PRUNE, CMD_STATUS, JSON, TEXT, UP

PASSWORD_VARIABLE = "SWARMREG_PASSWORD"
# Seconds to wait for an answer; a garbage collection may take long (the origin's GC_WAIT).
TIMEOUT = 60.0
GC_TIMEOUT = 1800.0
# `swarmreg status`'s exit status when a node is down (as `systemctl is-active` says "inactive").
NODE_DOWN = 3


class AdminError(Exception):
    """The command failed; the message is the one line to print. ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# Names of this host: ``docker login localhost:15000`` serves ``--proxy http://127.0.0.1:15000``.
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _host_port(url: str) -> str:
    """``host:port`` of a URL or of a docker config ``auths`` key (which may lack a scheme)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = (parts.hostname or "").lower()
    host = "localhost" if host in _LOOPBACK else host
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme or "https", 443)
    return f"{host}:{port}"


def docker_config_path(option: str | None) -> tuple[Path, bool]:
    """The docker config file to read, and whether it was named (a missing default is no error)."""
    if option:
        path = Path(option).expanduser()
        return (path / "config.json" if path.is_dir() else path), True
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory).expanduser() if directory else Path.home() / ".docker"
    return base / "config.json", False


def docker_credentials(path: Path, proxy: str, *, required: bool) -> tuple[str, str] | None:
    """The user and password for ``proxy`` in the docker config file at ``path``, if it has them."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise AdminError(f"docker config {path} does not exist", 2) from None
        return None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AdminError(f"cannot read docker config {path}: {getattr(error, 'strerror', None) or error}", 2) from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = _host_port(proxy)
    for key, entry in auths.items():
        if not isinstance(entry, dict) or _host_port(str(key)) != wanted:
            continue
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
        try:
            user, sep, password = base64.b64decode(str(entry.get("auth", "")), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise AdminError(f"docker config {path}: the entry for {key} has no usable auth (base64 user:password)", 2)
        return user, password
    return None


class ChallengeAuth(httpx.Auth):
    """Docker's way with a registry: a request without credentials first; on a 401 the same
    request with basic credentials (a Basic challenge), or with a bearer token fetched from the
    challenge's realm for its scope (a Bearer challenge), with those credentials if any."""

    requires_response_body = True

    def __init__(self, credentials: tuple[str, str] | None) -> None:
        self.basic = httpx.BasicAuth(*credentials) if credentials else None
        self.token: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or self.token:
            return
        if challenge.lower().startswith("bearer "):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            if "realm" not in params:
                return
            # A request made here has none of the client's settings: give it the timeouts at least.
            token_request = httpx.Request("GET", params["realm"], params={
                name: value for name, value in params.items() if name in ("service", "scope")},
                extensions={key: request.extensions[key] for key in ("timeout",) if key in request.extensions})
            if self.basic is not None:
                token_request = next(self.basic.auth_flow(token_request))
            token_response = yield token_request
            if token_response.status_code != 200:
                raise AdminError(f"the token endpoint refused: {error_message(token_response)}")
            try:
                body = token_response.json()
                self.token = str(body.get("token") or body["access_token"])
            except (ValueError, KeyError, AttributeError):
                raise AdminError("the token endpoint answered no token") from None
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request
        elif challenge.lower().startswith("basic ") and self.basic is not None:
            yield next(self.basic.auth_flow(request))


def error_message(response: httpx.Response) -> str:
    """``CODE: message`` from the registry's error envelope, else the status."""
    try:
        entry = response.json()["errors"][0]
        return f"{entry['code']}: {entry['message']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return f"the proxy answered {response.status_code}"


def _credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.user:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            raise AdminError(f"--user needs the password in the {PASSWORD_VARIABLE} environment variable", 2)
        return args.user, password
    path, named = docker_config_path(args.docker_config)
    return docker_credentials(path, args.proxy, required=named)


def request(args: argparse.Namespace, method: str, path: str, params: dict[str, str], *, accept: str,
            timeout: float = TIMEOUT) -> httpx.Response:
    """The admin API's answer (a 200); AdminError on any failure."""
    auth = ChallengeAuth(_credentials(args))
    try:
        with httpx.Client(base_url=proxy_url(args.proxy), auth=auth, verify=args.ca or True,
                          timeout=httpx.Timeout(timeout, connect=10)) as client:
            response = client.request(method, path, params=params, headers={"Accept": accept})
    except httpx.InvalidURL as error:
        raise AdminError(f"--proxy {args.proxy!r} is not a URL: {error}", 2) from None
    except (httpx.HTTPError, OSError) as error:
        raise AdminError(f"cannot reach the proxy at {args.proxy}: {error or type(error).__name__}") from None
    if response.status_code != 200:
        raise AdminError(f"the proxy refused: {error_message(response)}")
    return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise AdminError("the proxy answered something that is not JSON") from None


def call(args: argparse.Namespace, method: str, path: str, params: dict[str, str], timeout: float = TIMEOUT) -> str:
    """The admin API's answer (text, or JSON text with ``--json``); AdminError on any failure."""
    response = request(args, method, path, params, accept=JSON if args.json else TEXT, timeout=timeout)
    if args.json:
        return json.dumps(_json(response), indent=2) + "\n"
    return response.text


def proxy_url(proxy: str) -> str:
    """``--proxy`` as a base URL: ``localhost:15000`` (as docker names registries) is plain HTTP."""
    return (proxy if "://" in proxy else f"http://{proxy}").rstrip("/")


def _count(value: str) -> str:
    if not re.fullmatch(r"-?\d{1,12}", value) or int(value) < -1:
        raise AdminError(f"--count must be a whole number, or -1 for no limit, not {value!r}", 2)
    return value


def _list(args: argparse.Namespace) -> str:
    count = _count(args.count)
    if args.blobs:
        if args.pattern or args.digest:
            raise AdminError("--blobs lists blobs by --substr, not --pattern or --digest", 2)
        return call(args, "GET", CMD_BLOBS, {"count": count, **({"substr": args.substr} if args.substr else {})})
    if args.substr:
        raise AdminError("--substr goes with --blobs", 2)
    params = {"count": count, **({"pattern": args.pattern} if args.pattern else {})}
    if args.manifests:
        if args.digest:
            raise AdminError("--digest filters images, not --manifests", 2)
        return call(args, "GET", CMD_MANIFESTS, params)
    return call(args, "GET", CMD_IMAGES, {**params, **({"digest": args.digest} if args.digest else {})})


def _prune(args: argparse.Namespace) -> str:
    params = {"type": args.type, "count": _count(args.count), "dryRun": "true" if args.dry_run else "false"}
    if args.type == "pattern":
        if not args.expr:
            raise AdminError("--type pattern needs --expr (comma-separated regular expressions)", 2)
        params["expr"] = args.expr
    else:
        if args.dur is None:
            raise AdminError(f"--type {args.type} needs --dur (a duration like 30d, 12h, 90m)", 2)
        try:
            parse_duration(args.dur)
        except ValueError as error:
            raise AdminError(f"--dur: {error}", 2) from None
        params["dur"] = args.dur
    return call(args, "DELETE", CMD_PRUNE, params)


def _gc(args: argparse.Namespace) -> str:
    return call(args, "POST", CMD_GC, {"dryRun": "true" if args.dry_run else "false"}, timeout=GC_TIMEOUT)


def _status(args: argparse.Namespace) -> tuple[str, int]:
    """The cluster's nodes and their health; NODE_DOWN (a line on standard error naming them) when any is down."""
    document = _json(request(args, "GET", CMD_STATUS, {}, accept=JSON))
    try:
        nodes = document["nodes"]
        down = [f"{node['role']} {node['address']}" for node in nodes if node["state"] != UP]
        text = json.dumps(document, indent=2) + "\n" if args.json else status_table(document)
    except (KeyError, TypeError):
        raise AdminError("the proxy answered no status document (does it run this version of swarmreg?)") from None
    if down:
        print(f"swarmreg status: {len(down)} of {len(nodes)} nodes down: {', '.join(down)}", file=sys.stderr)
    return text, NODE_DOWN if down else 0


def add_admin_commands(commands: Any, default_proxy: str) -> None:
    """The ``list``, ``prune``, ``gc`` and ``status`` subcommands of ``swarmreg``."""
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--proxy", metavar="URL", default=default_proxy,
                            help=f"the proxy's registry port (default: the devcluster's, {default_proxy})")
        parser.add_argument("--user", metavar="USER",
                            help=f"sign in as USER, the password in the {PASSWORD_VARIABLE} environment variable "
                                 "(default: the proxy's entry in the docker config file, else anonymous)")
        parser.add_argument("--docker-config", metavar="PATH",
                            help="the docker config file (or its directory) to take credentials from (default: "
                                 "$DOCKER_CONFIG/config.json, else ~/.docker/config.json)")
        parser.add_argument("--ca", metavar="FILE", help="a PEM CA bundle to verify an https proxy with")
        parser.add_argument("--json", action="store_true", help="print the API's JSON instead of its columns")

    listing = commands.add_parser("list", help="list the herd's images, manifests or blobs (admin API)",
                                  description="List what the herd's index holds: images (repository:tag and "
                                              "their blobs), with --manifests every manifest and its tags, with "
                                              "--blobs every blob and its reference counts. Needs the admin action.")
    listing.add_argument("--pattern", metavar="RE,...",
                         help="only references matching one of these comma-separated regular expressions "
                              "(searched, as ociregistry: anchor with ^...$)")
    listing.add_argument("--digest", metavar="SUBSTR", help="only images naming a blob whose digest contains this")
    listing.add_argument("--manifests", action="store_true", help="list manifests, not images")
    listing.add_argument("--blobs", action="store_true", help="list blobs with their reference counts")
    listing.add_argument("--substr", metavar="SUBSTR", help="with --blobs: only digests containing this")
    listing.add_argument("--count", metavar="N", default="-1", help="at most N entries (default -1: all)")
    common(listing)
    listing.set_defaults(admin=_list)

    prune = commands.add_parser("prune", help="prune manifests from the herd (admin API)",
                                description="Remove manifests and their tags from the herd's index, as "
                                            "ociregistry prunes: not pulled within --dur (accessed), recorded "
                                            "before --dur (created), or matching --expr (pattern). A manifest "
                                            "list takes its children; blobs go at the next garbage collection "
                                            "(swarmreg gc). Try --dry-run first.")
    prune.add_argument("--type", required=True, choices=["accessed", "created", "pattern"])
    prune.add_argument("--dur", metavar="DURATION", help="for accessed and created: 30d, 12h, 90m, or seconds")
    prune.add_argument("--expr", metavar="RE,...", help="for pattern: comma-separated regular expressions "
                                                         "searched in repository:tag and repository@digest")
    prune.add_argument("--count", metavar="N", default="-1", help="at most N manifests (default -1: no limit)")
    prune.add_argument("--dry-run", action="store_true", help="show what would be pruned, change nothing")
    common(prune)
    prune.set_defaults(admin=_prune)

    gc = commands.add_parser("gc", help="run the herd's garbage collection once (admin API)",
                             description="Remove the blobs no manifest, repository link or upload references, "
                                         "after their grace period; prints the collector's report.")
    gc.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    common(gc)
    gc.set_defaults(admin=_gc)

    status = commands.add_parser("status", help="the cluster's nodes and their health (admin API)",
                                 description="Print the proxy and every member of the origin, tracker and index "
                                             "rings it uses, up or down, with when each was last checked (members "
                                             "no schedule checks are probed now). Exits 0 when all are up, "
                                             f"{NODE_DOWN} when any is down, 1 when the proxy refuses or cannot be "
                                             "reached.")
    common(status)
    status.set_defaults(admin=_status)


def run_admin(args: argparse.Namespace) -> int:
    """Run ``list``, ``prune``, ``gc`` or ``status``; returns the exit status."""
    status = 0
    try:
        answer = args.admin(args)
        text, status = answer if isinstance(answer, tuple) else (answer, 0)
        sys.stdout.write(text)
        sys.stdout.flush()
    except AdminError as error:
        print(f"swarmreg {args.command}: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(f"swarmreg {args.command}: interrupted (a prune or gc the proxy received runs to its end)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `swarmreg list | head`: the reader left, which is no failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
