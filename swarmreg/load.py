"""``swarmreg load``: post an image list to the proxy's ``POST /preheat`` and follow the job.

Progress goes to standard error as plain lines (no progress-bar library is a dependency), one each
time the counts change; the end result goes to standard output, one line per image. The status is
0 when every image is loaded, 1 otherwise (the errors printed), 2 for a list or an option that
cannot be used. A framework-free client: httpx only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx

from swarmreg.admin_cli import PASSWORD_VARIABLE, error_message
from swarmreg.proxy.wire import (
    ALL_AGENTS,
    DONE,
    MAX_IMAGES,
    PREHEAT,
    RUNNING,
    job_path,
    parse_platform,
    read_image_list,
)

POLL_INTERVAL = 0.5


class LoadError(Exception):
    """The load cannot go on; the message says why (exit status 1)."""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _progress_line(doc: dict[str, Any]) -> str:
    images, blobs, size = doc["images"], doc["blobs"], doc["bytes"]
    line = (f"images {images['done']}/{images['total']} ({images['failed']} failed), "
            f"blobs {blobs['done']}/{blobs['total']} ({blobs['failed']} failed), "
            f"{_mib(size['done'])} of {_mib(size['total'])}")
    if "agents" in doc:
        agents = doc["agents"]
        line += f", agents {agents['asked']}: {agents['blobs']['done']}/{agents['blobs']['total']} blobs"
    return line


def _parse_agents(value: str | None) -> int | str | None:
    if value is None or value == ALL_AGENTS:
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f'--agents must be a count of at least 1 or "all", not {value!r}')


def _read_list(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    with open(name, encoding="utf-8") as file:
        return file.read()


def run_load(args: argparse.Namespace) -> int:
    """Run ``swarmreg load`` with its parsed arguments; returns the exit status."""
    try:
        targets = read_image_list(_read_list(args.image_file), where=args.image_file)
        if args.platform:
            parse_platform(args.platform)
        agents = _parse_agents(args.agents)
    except (OSError, UnicodeDecodeError) as error:
        print(f"swarmreg load: cannot read {args.image_file}: {getattr(error, 'strerror', None) or error}",
              file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"swarmreg load: {error}", file=sys.stderr)
        return 2
    if not targets:
        print(f"swarmreg load: {args.image_file} names no image", file=sys.stderr)
        return 2
    auth = None
    if args.username:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            print(f"swarmreg load: --username needs the password in the {PASSWORD_VARIABLE} environment variable",
                  file=sys.stderr)
            return 2
        auth = httpx.BasicAuth(args.username, password)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    references = [target.text for target in targets]
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=args.proxy.rstrip("/"), auth=auth, verify=args.ca or True,
                          timeout=httpx.Timeout(60, connect=10)) as client:
            # The proxy takes MAX_IMAGES a job: a longer list is loaded as several jobs, one after another.
            for start in range(0, len(references), MAX_IMAGES):
                body: dict[str, Any] = {"images": references[start:start + MAX_IMAGES]}
                if args.platform:
                    body["platform"] = args.platform
                if agents is not None:
                    body["agents"] = agents
                doc = _follow(client, body, deadline)
                results += doc.get("results", [])
                errors += doc.get("errors", [])
                if doc.get("errors_dropped"):
                    errors.append({"message": f"... and {doc['errors_dropped']} more error(s)"})
    except LoadError as error:
        print(f"swarmreg load: {error}", file=sys.stderr)
        return 1
    loaded = [r for r in results if r.get("status") == DONE]
    for result in results:
        if result.get("status") == DONE:
            print(f"loaded {result['image']} {result.get('digest', '')}".rstrip())
        else:
            print(f"FAILED {result['image']}: {result.get('error') or result.get('status')}")
    shown = {(r.get("image"), r.get("error")) for r in results}
    for entry in errors:  # those not already printed with their image
        if (entry.get("image"), entry.get("message")) not in shown:
            where = f"{entry['image']}: " if entry.get("image") else ""
            print(f"error: {where}{entry.get('message')}", file=sys.stderr)
    print(f"swarmreg load: {len(loaded)} of {len(references)} image(s) loaded", file=sys.stderr)
    return 0 if len(loaded) == len(references) and not errors else 1


def _follow(client: httpx.Client, body: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """Post one job and poll it until it ends; its last progress document."""
    try:
        response = client.post(PREHEAT, json=body)
    except httpx.HTTPError as error:
        raise LoadError(f"cannot reach the proxy at {client.base_url}: {error or type(error).__name__}") from None
    if response.status_code != 202:
        raise LoadError(f"the proxy refused the job: {error_message(response)}")
    job_id = response.json()["id"]
    print(f"preheat job {job_id}: {len(body['images'])} image(s)", file=sys.stderr)
    last = ""
    while True:
        try:
            answer = client.get(job_path(job_id))
        except httpx.HTTPError as error:
            raise LoadError(f"lost the proxy at {client.base_url}: {error or type(error).__name__}") from None
        if answer.status_code != 200:
            raise LoadError(f"reading job {job_id}: {error_message(answer)}")
        doc: dict[str, Any] = answer.json()
        line = _progress_line(doc)
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if doc["status"] != RUNNING:
            return doc
        if deadline is not None and time.monotonic() > deadline:
            raise LoadError(f"job {job_id} still running after the --timeout")
        time.sleep(POLL_INTERVAL)
