"""Prometheus metrics: one CollectorRegistry per daemon (no global default registry).

The request middleware (swarmreg.http.app) records into ``Metrics``; every other series is read,
when scraped, from the counters each role already keeps for /stats, by the collectors the daemon
and each role register (``Metrics.add``). Names and labels are listed in docs/metrics.md.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

# The ports that speak the registry API to registry clients (docker, containerd), and its routes'
# prefix: scrapes and health checks on those ports are not registry clients' bytes.
REGISTRY_PORTS = frozenset({"proxy", "agent-registry"})
REGISTRY_API = "/v2"
# Methods named in the request series; any other is "other" (the label's values stay bounded).
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Request latency buckets, seconds: from a cached manifest (ms) to a multi-GiB layer (minutes).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# How often the event-loop lag probe wakes.
LAG_INTERVAL = 1.0

# (direction, kind) -> bytes: "sent" or "received", to/from a "registry_client", "origin" or "agent".
ByteCounts = Mapping[tuple[str, str], int]
KINDS = ("registry_client", "origin", "agent")


class Metrics:
    """One daemon's registry: the HTTP series of all its ports, process figures, the event loop's
    lag, and the collectors its roles add (``add``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(namespace="swarmreg", registry=self.registry)
        # Plain counts, made into families at each scrape (_HttpCollector): no _created series.
        self.requests: Counter[tuple[str, str, str, str]] = Counter()  # (port_role, route, method, status)
        # (port_role, route, method) -> [count in each of DURATION_BUCKETS and past them, sum of seconds]
        self.durations: dict[tuple[str, str, str], list[float]] = {}
        self.lag = 0.0  # seconds, as last measured
        # (port_role, "sent" | "received") -> HTTP body bytes; ("sent" | "received", "registry_client")
        # -> those of the registry API on the registry ports.
        self.http_bytes: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.client_bytes: defaultdict[tuple[str, str], int] = defaultdict(int)
        # Where bytes by kind come from besides the registry ports: the swarm engine, the agent.
        self.byte_sources: list[Callable[[], ByteCounts]] = [lambda: self.client_bytes]
        self.registry.register(_HttpCollector(self))

    def add(self, collector: Collector) -> None:
        """Register a role's collector."""
        self.registry.register(collector)

    def observe(self, port_role: str, route: str | None, method: str, status: int, seconds: float,
                sent: int, received: int) -> None:
        """Record one answered request (the middleware calls this once the response has ended)."""
        route = route or UNMATCHED
        method = method if method in METHODS else "other"
        self.requests[port_role, route, method, str(status)] += 1
        counts = self.durations.setdefault((port_role, route, method), [0.0] * (len(DURATION_BUCKETS) + 2))
        counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        counts[-1] += seconds
        self.http_bytes[port_role, "sent"] += sent
        self.http_bytes[port_role, "received"] += received
        if port_role in REGISTRY_PORTS and (route == REGISTRY_API or route.startswith(REGISTRY_API + "/")):
            self.client_bytes["sent", "registry_client"] += sent
            self.client_bytes["received", "registry_client"] += received

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    async def measure_lag(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``swarmreg_event_loop_lag_seconds`` current until cancelled (run in the daemon's nursery)."""
        task_status.started()
        while True:
            asked = trio.current_time()
            await trio.sleep(LAG_INTERVAL)
            self.lag = max(0.0, trio.current_time() - asked - LAG_INTERVAL)


class _HttpCollector(Collector):
    """The series of Metrics itself: requests, their durations and bytes, bytes by kind, the loop's lag."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        yield labelled("swarmreg_http_requests", "HTTP requests answered, by port, URL rule, method and status.",
                       ("port_role", "route", "method", "status"), sorted(metrics.requests.items()))
        durations = HistogramMetricFamily(
            "swarmreg_http_request_duration_seconds", "Seconds from a request's arrival to the end of its "
            "response body.", labels=("port_role", "route", "method"))
        for key, counts in sorted(metrics.durations.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            bounds = [*(repr(float(bound)) for bound in DURATION_BUCKETS), "+Inf"]
            durations.add_metric(key, list(zip(bounds, cumulative, strict=True)), counts[-1])
        yield durations
        yield gauge("swarmreg_event_loop_lag_seconds",
                    "How late the event loop last woke a task that slept for a second (a busy or blocked loop).",
                    metrics.lag)
        totals: defaultdict[tuple[str, str], int] = defaultdict(int)
        for source in self.metrics.byte_sources:
            for pair, value in source().items():
                totals[pair] += value
        for direction, what in (("sent", "Payload bytes sent"), ("received", "Payload bytes received")):
            family = CounterMetricFamily(
                f"swarmreg_bytes_{direction}", f"{what}, by counterpart: registry_client (the registry ports), "
                "origin (peer wire and relays), agent (peer wire).", labels=("kind",))
            for kind in KINDS:
                family.add_metric((kind,), totals[direction, kind])
            yield family
        http = self.metrics.http_bytes
        ports = sorted({port for port, _ in list(http)})
        for direction, name in (("sent", "response"), ("received", "request")):
            family = CounterMetricFamily(f"swarmreg_http_{name}_bytes", f"HTTP {name} body bytes, by port.",
                                         labels=("port_role",))
            for port in ports:
                family.add_metric((port,), http.get((port, direction), 0))
            yield family


def counter(name: str, doc: str, value: float) -> Metric:
    """A counter family of one sample (``name`` without ``_total``)."""
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> Metric:
    """A gauge family of one sample."""
    return GaugeMetricFamily(name, doc, value=value)


def labelled(name: str, doc: str, labels: tuple[str, ...], values: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    """A counter family with a sample per (label values, value)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


class FamiliesCollector(Collector):
    """A collector whose families ``families()`` makes at each scrape (from a role's counters)."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families()


def swarm_families(counters: dict[str, Any]) -> Iterator[Metric]:
    """The swarm engine's series, from ``SwarmEngine.counters()``."""
    yield gauge("swarmreg_torrents", "Torrents in the swarm session.", counters["torrents"])
    yield gauge("swarmreg_torrents_downloading", "Torrents not complete yet.", counters["downloading"])
    yield gauge("swarmreg_peers_connected", "Peer-wire connections, summed over torrents.", counters["peers"])
    yield counter("swarmreg_pieces_verified_total", "Pieces downloaded that passed their hash check.",
                  counters["pieces_verified"])
    yield counter("swarmreg_pieces_failed_total", "Pieces downloaded that failed their hash check.",
                  counters["hash_failures"])
    yield counter("swarmreg_banned_peers_total", "Peers banned for sending corrupt pieces.", counters["banned_peers"])


def disk_families(path: str) -> Iterator[Metric]:
    """The size and free space of the filesystem holding the data directory ``path``."""
    try:
        stat = os.statvfs(path)
    except OSError:  # gone (a test's temporary directory): no sample
        return
    yield gauge("swarmreg_disk_total_bytes", "Size of the filesystem holding the data directory.",
                stat.f_blocks * stat.f_frsize)
    yield gauge("swarmreg_disk_free_bytes", "Bytes free for the daemon on the filesystem holding the data directory.",
                stat.f_bavail * stat.f_frsize)


def swarm_collectors(metrics: Metrics, engine: Any) -> None:
    """Register the swarm engine's series and byte counts (an engine is shared by the roles of a daemon)."""
    metrics.add(FamiliesCollector(lambda: swarm_families(engine.counters())))
    metrics.byte_sources.append(engine.byte_counts)
