"""The agent's local admin on its blob port: list the held blobs, evict one (docs/cache.md)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from swarmreg.agent.cache import BlobCache
from swarmreg.agent.wire import BLOB_COLUMNS, BLOB_LIST, EVICT
from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, DENIED, SwarmregError
from swarmreg.http.responses import json_response


def is_loopback(address: str | None) -> bool:
    """Whether a client's address (as the server saw it) is on this host's loopback."""
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> str:
    """``rows`` as left-aligned columns under a header line, as `column -t` prints them."""
    table = [[name.upper() for name in names], *([str(row[name]) for name in names] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(names))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in table)


def _wants_json() -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_admin_routes(app: QuartTrio, cache: BlobCache, *, remote: bool = False) -> None:
    """``GET /cmd/blob/list[?substr=]`` and ``DELETE /cmd/evict?digest=``; refused (403 DENIED)
    from any address but loopback unless ``remote`` (agent.cache.admin_remote)."""

    def check_client() -> None:
        if not remote and not is_loopback(request.remote_addr):
            raise SwarmregError(DENIED, "the agent's admin API answers clients on this host only "
                                        "(agent.cache.admin_remote allows others)")

    @app.get(BLOB_LIST)
    async def blob_list() -> Response:
        check_client()
        substr = request.args.get("substr", "")
        rows = [row for row in cache.listing() if substr in row["digest"]]
        if _wants_json():
            return json_response({"blobs": rows})
        shown = [row | {"last_read": _time(row["last_read"]), "held_since": _time(row["held_since"]),
                        "pinned": "yes" if row["pinned"] else "no"} for row in rows]
        return Response(columns(shown, BLOB_COLUMNS), content_type="text/plain; charset=utf-8")

    @app.delete(EVICT)
    async def evict() -> Response:
        check_client()
        if not (text := request.args.get("digest", "")):
            raise SwarmregError(BAD_REQUEST, "name the blob to evict: DELETE /cmd/evict?digest=<digest>")
        eviction = await cache.evict(Digest.parse(text))
        if _wants_json():
            return json_response({"digest": str(eviction.digest), "size": eviction.size, "reason": eviction.reason})
        return Response(f"evicted {eviction.digest} ({eviction.size} bytes)\n",
                        content_type="text/plain; charset=utf-8")
