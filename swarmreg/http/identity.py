"""The caller of an HTTP request on an internal port, and the guard of its write routes.

hypercorn (0.18) puts no TLS details into the ASGI scope, so serve.py records each connection's
stream in ``CONNECTION`` when hypercorn starts serving it; the connection's request tasks are
started from that task and so see it (a context variable is copied into each task started).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio

from swarmreg.authz import ClusterGuard

# The stream of the connection the current request came on (a trio.SSLStream with TLS).
CONNECTION: contextvars.ContextVar[trio.abc.Stream | None] = contextvars.ContextVar(
    "swarmreg_connection", default=None)


def peer_certificate() -> dict[str, Any] | None:
    """The verified client certificate of the current request's connection (None: plain HTTP)."""
    stream = CONNECTION.get()
    if not isinstance(stream, trio.SSLStream):
        return None
    cert: dict[str, Any] | None = stream.getpeercert()
    return cert or None


def is_write() -> bool:
    """Whether the current request changes something: any method but GET and HEAD."""
    return request.method not in ("GET", "HEAD", "OPTIONS")


def guard_writes(app: QuartTrio, guard: ClusterGuard, needed: frozenset[str], what: str,
                 writes: Callable[[], bool] = is_write) -> None:
    """Check every request ``writes`` says is a write against ``guard`` before its route runs
    (before its body is read or its arguments are parsed): UNAUTHORIZED or DENIED otherwise."""
    if guard.open:
        return

    @app.before_request
    async def _check_writer() -> None:
        if writes():
            guard.check(needed, what, peercert=peer_certificate(),
                        authorization=request.headers.get("Authorization"))
