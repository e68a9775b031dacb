"""The registry of backend types: ``[[backends]] type = NAME`` -> its options class and factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from swarmreg.backends.base import Backend
from swarmreg.backends.filesystem import FilesystemBackend, FilesystemOptions
from swarmreg.backends.http import HttpBackend, HttpOptions
from swarmreg.backends.registry import RegistryBackend, RegistryOptions
from swarmreg.backends.s3 import S3Backend
from swarmreg.backends.s3_bucket import S3Options


@attrs.frozen
class BackendType:
    """A registered kind of backend: its options class and how to build one."""

    name: str
    options: type
    factory: Callable[[Any, Path], Backend]  # (options, data_dir) -> Backend


_TYPES: dict[str, BackendType] = {
    "filesystem": BackendType("filesystem", FilesystemOptions, FilesystemBackend.from_options),
    "registry": BackendType("registry", RegistryOptions, RegistryBackend.from_options),
    "s3": BackendType("s3", S3Options, S3Backend.from_options),
    "http": BackendType("http", HttpOptions, HttpBackend.from_options),
}


def register_backend(name: str, options: type, factory: Callable[[Any, Path], Backend]) -> None:
    """Make backend type ``name`` available to ``[[backends]] type = name`` in the config."""
    if name in _TYPES:
        raise ValueError(f"backend type {name!r} registered twice")
    _TYPES[name] = BackendType(name, options, factory)


def backend_type(name: str) -> BackendType | None:
    """The registered type ``name``, or None."""
    return _TYPES.get(name)


def backend_types() -> tuple[BackendType, ...]:
    """Every registered type, the built-in ones first."""
    return tuple(_TYPES.values())
