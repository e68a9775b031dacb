"""Per-namespace choice of backend by regular expression, first match wins (as in Kraken)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from swarmreg.backends.base import Backend
from swarmreg.backends.registry import UPSTREAM_NAMESPACE, RegistryBackend
from swarmreg.backends.types import backend_type
from swarmreg.config import BackendConfig, RegistryConfig


class BackendRouter:
    """Maps a namespace to the backend configured for it."""

    def __init__(self, routes: Sequence[tuple[re.Pattern[str], Backend]]) -> None:
        self.routes = list(routes)

    @classmethod
    def from_config(cls, backends: Sequence[BackendConfig], data_dir: Path, *,
                    registries: Sequence[RegistryConfig] = (), air_gapped: bool = False) -> BackendRouter:
        """The configured ``[[backends]]``, in their order, after one route that sends every
        upstream namespace (``<host[:port]>/<repo>``) to its upstream registry, read-only
        (``registries`` are the upstreams' settings; ``air_gapped``: never contact one)."""
        routes: list[tuple[re.Pattern[str], Backend]] = [
            (re.compile(UPSTREAM_NAMESPACE), RegistryBackend.for_upstreams(registries, air_gapped))]
        for entry in backends:
            kind = backend_type(entry.type)
            assert kind is not None, "config loading checks backend types"
            routes.append((re.compile(entry.namespace), kind.factory(entry.options, data_dir)))
        return cls(routes)

    def for_namespace(self, namespace: str) -> Backend | None:
        """The first backend whose pattern matches the whole namespace, or None."""
        for pattern, backend in self.routes:
            if pattern.fullmatch(namespace):
                return backend
        return None

    async def aclose(self) -> None:
        for _pattern, backend in self.routes:
            await backend.aclose()
