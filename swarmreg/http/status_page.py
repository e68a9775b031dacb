"""The status page (GET /status on every HTTP port) and the figures it reads from /stats.

The page is one self-contained HTML file (status.html: inline CSS and script, no other asset)
that fetches the same port's /stats every REFRESH_MS and fills itself in with textContent and
createElement only: repository names, peer addresses and error messages are input from others.
Its script and style run by a per-response nonce under a strict Content-Security-Policy.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from quart import Response
from quart.wrappers.response import DataBody

if TYPE_CHECKING:
    from swarmreg.node import Node
    from swarmreg.store.blobstore import BlobStore
    from swarmreg.swarm.engine import SwarmEngine

# How often the page asks /stats again (milliseconds).
REFRESH_MS = 1500
# The page lists at most this many peers and downloads (the busiest first).
LISTED = 50
_NONCE = "{{nonce}}"
_REFRESH = "{{refresh_ms}}"


def load_page() -> str:
    """The page's template (read once per app, from the package's status.html)."""
    return files("swarmreg.http").joinpath("status.html").read_text(encoding="utf-8")


def page(template: str) -> tuple[str, dict[str, str]]:
    """The page with a fresh nonce for its inline script and style, and the headers that keep
    anything else from running or loading."""
    nonce = secrets.token_urlsafe(18)
    body = template.replace(_NONCE, nonce).replace(_REFRESH, str(REFRESH_MS))
    policy = (f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
              "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return body, {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": policy,
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                  "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def page_response(template: str) -> Response:
    """``page`` as a Quart response."""
    body, headers = page(template)
    return Response(body, headers=headers)


def _count_held(store: BlobStore) -> tuple[int, int]:
    """(blobs, bytes) the store holds (a directory scan: blocking)."""
    blobs = size = 0
    for digest in store.digests():
        if (stat := store.stat(digest)) is not None:
            blobs += 1
            size += stat.st_size
    return blobs, size


def _swarm(engine: SwarmEngine) -> dict[str, Any]:
    """The torrents being downloaded (with their progress) and the peers connected, busiest first."""
    downloads: list[dict[str, Any]] = []
    peers: dict[str, dict[str, Any]] = {}
    seeding = 0
    for torrent in engine:
        for peer in torrent.peer_details():
            entry = peers.setdefault(peer["address"], {"address": peer["address"], "kind": peer["kind"], "torrents": 0,
                                                       "down_rate": 0, "up_rate": 0, "downloaded": 0, "uploaded": 0})
            entry["torrents"] += 1
            for key in ("down_rate", "up_rate", "downloaded", "uploaded"):
                entry[key] += peer[key]
        if torrent.finished.is_set():
            seeding += 1
            continue
        downloads.append({"digest": str(torrent.metainfo.digest), "namespace": torrent.namespace,
                          "size": torrent.metainfo.size, "pieces": torrent.metainfo.num_pieces,
                          "pieces_done": torrent.have_count, "error": torrent.error, **torrent.progress(),
                          "age": round(time.monotonic() - torrent.added, 1)})
    downloads.sort(key=lambda d: d["age"], reverse=True)
    listed = sorted(peers.values(), key=lambda p: p["down_rate"] + p["up_rate"], reverse=True)
    return {"torrents": seeding + len(downloads), "seeding": seeding, "downloading": len(downloads),
            "downloads": downloads[:LISTED], "peers": listed[:LISTED], "peer_count": len(peers)}


async def status_figures(node: Node) -> dict[str, Any]:
    """The ``status`` part of every port's /stats: what the status page shows."""
    status = node.status
    blobs, held = await status.held(lambda: _count_held(node.store))
    figures: dict[str, Any] = {
        "roles": list(node.bound), "addresses": {role: dict(ports) for role, ports in node.bound.items()},
        "started": datetime.fromtimestamp(status.started, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "uptime": round(status.uptime(), 1), "held": {"blobs": blobs, "bytes": held},
        "errors": list(reversed(status.errors)),
    }
    if node.engine is not None:
        figures["peer"] = str(node.engine.address)
        figures["swarm"] = _swarm(node.engine)
    for role, source in status.sources.items():
        figures[role] = source()
    return figures


# Answers a client meets in the normal course of the registry protocol, not errors worth listing:
# the authentication challenge, a blob or manifest probed before a push, a range past the end.
ROUTINE_STATUSES = frozenset({401, 404, 416})


async def note_error(node: Node, method: str, path: str, response: Response) -> None:
    """Remember an error answer (5xx, and 4xx but the routine ones) in the node's recent errors,
    with the first code, message and detail of its JSON envelope."""
    status = response.status_code
    if status < 400 or status in ROUTINE_STATUSES:
        return
    message = ""
    if isinstance(response.response, DataBody) and response.mimetype == "application/json":  # not a stream
        try:
            first = json.loads(await response.get_data())["errors"][0]
            message = f"{first['code']}: {first.get('message') or ''}"
            if first.get("detail"):
                message += " " + json.dumps(first["detail"], ensure_ascii=False, separators=(",", ":"))
        except (ValueError, KeyError, IndexError, TypeError):
            pass
    node.status.record(f"{method} {path}", message or f"HTTP {status}", status)
