"""Serve a Quart app with hypercorn's trio worker as a structured-concurrency service."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Mapping
from functools import partial
from urllib.parse import urlsplit

import hypercorn.config
import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from quart_trio import QuartTrio

from swarmreg.config import Address, HttpConfig
from swarmreg.http.identity import CONNECTION
from swarmreg.http.paths import HEALTH, METRICS
from swarmreg.http.routes import add_metrics_route
from swarmreg.metrics import Metrics
from swarmreg.tls.context import ServerTls

# hypercorn reads every socket 64 KiB at a time (hypercorn.trio.tcp_server.MAX_RECV): a blob
# pushed in 64 KiB pieces pays hypercorn's, h11's and the app's per-event work 16 times per MiB.
# A connection whose reads come back full reads more at once, up to RECV_MAX; one whose reads
# come back short (requests without a large body) goes back down, so an idle or chatty
# connection never asks for a large buffer.
RECV_MIN = MAX_RECV
RECV_MAX = 1 << 20


def next_recv_size(size: int, received: int) -> int:
    """The size of a connection's next read after one of ``size`` bytes brought ``received``."""
    if received >= size:
        return min(size * 2, RECV_MAX)
    if received < size // 4:
        return max(size // 2, RECV_MIN)
    return size


class _IdentifyingTCPServer(TCPServer):
    """hypercorn's connection handler, recording the connection's stream for the requests on it
    (swarmreg.http.identity reads the client certificate from it: the ASGI scope has none), and
    reading in sizes that grow with a request body's flow (next_recv_size)."""

    async def run(self) -> None:
        CONNECTION.set(self.stream)
        await super().run()

    async def _read_data(self) -> None:
        # hypercorn's own loop (TCPServer._read_data), with the read size adapted.
        size = RECV_MIN
        while True:
            try:
                with trio.fail_after(self.config.read_timeout or math.inf):
                    data = await self.stream.receive_some(size)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
            size = next_recv_size(size, len(data))
        await self.protocol.handle(Closed())


# hypercorn's trio worker builds one handler per accepted connection from this name.
hypercorn.trio.run.TCPServer = _IdentifyingTCPServer  # type: ignore[attr-defined]


def _drop_unfinished(record: logging.LogRecord) -> bool:
    # hypercorn logs a request a first time, with status "-", when its stream
    # closes before the response is complete; the real line follows.
    return not (isinstance(record.args, Mapping) and record.args.get("s") == "-")


def _drop_probes(record: logging.LogRecord) -> bool:
    # The rings' health probes (every client daemon asks every member every few seconds) and
    # Prometheus' scrapes that succeed are logged at debug level only: they made most of a cluster's log.
    args = record.args
    return not (isinstance(args, Mapping) and args.get("m") == "GET" and args.get("U") in (HEALTH, METRICS)
                and args.get("s") == "200" and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG))


async def serve_http(
    app: QuartTrio,
    listen: Address,
    *,
    http: HttpConfig,
    stop: trio.Event,
    graceful_timeout: float,
    tls: ServerTls | None = None,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` until ``stop`` is set, then drain for ``graceful_timeout``.

    Reports the bound address (the real port when ``listen.port`` is 0) once the
    socket listens. With ``tls`` it serves HTTPS (requiring a client certificate
    when ``tls.ca`` is set). With ``metrics`` (the daemon's) it serves ``GET /metrics`` and
    records its requests there.
    """
    if metrics is not None:
        add_metrics_route(app, metrics)
    config = hypercorn.config.Config()
    config.bind = [str(listen)]
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = http.keep_alive_timeout
    config.errorlog = logging.getLogger(f"swarmreg.http.{app.name}")
    config.accesslog = access_log = logging.getLogger(f"swarmreg.access.{app.name}")
    if not access_log.filters:
        access_log.addFilter(_drop_unfinished)
        access_log.addFilter(_drop_probes)
    # %(R)s keeps the query: a mirror's ?ns=<registry> (containerd) shows which upstream a pull was
    # for. No port of ours takes a credential in the query, so nothing secret reaches the log.
    config.access_log_format = '%(h)s "%(R)s" %(s)s %(b)s %(D)sus'
    config.include_server_header = False
    if tls is not None:
        config.certfile, config.keyfile = tls.cert, tls.key
        if tls.ca:
            config.ca_certs, config.verify_mode = tls.ca, ssl.CERT_REQUIRED
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait))
        bound = urlsplit(binds[0])
        task_status.started(Address(bound.hostname or listen.host, bound.port or listen.port))
