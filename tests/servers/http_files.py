"""A real HTTP server of a directory (Python's http.server, in a thread) on 127.0.0.1: the web
server an HTTP storage backend reads ``<base>/<digest>`` from."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Quiet(SimpleHTTPRequestHandler):
    requests: list[tuple[str, str, int]]

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.requests.append((self.command, self.path, int(code)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # a reader that hangs up early is no news


@contextmanager
def file_server(root: Path, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[tuple[str, str, int]]]]:
    """Serve ``root`` (over TLS with ``tls``) until the block ends; gives the port and the log of
    (method, path, status)."""
    requests: list[tuple[str, str, int]] = []
    handler = type("Handler", (_Quiet,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
