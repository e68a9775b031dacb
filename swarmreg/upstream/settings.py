"""The ``[[registries]]`` configuration of upstream registries (re-exported by swarmreg.config).

Kept apart from swarmreg.config so that the upstream client and the upstream-registry storage
backend, whose options hold these classes, need not import the configuration module, which
imports every backend type.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from swarmreg.redaction import secret_field

REGISTRY_NAME = re.compile(
    r"(?=.{1,253}(:|$))[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"(:(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}))?")


def _registry_name(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not REGISTRY_NAME.fullmatch(value):
        raise ValueError(f"'name' must be host[:port] (e.g. 'registry.example.com:5000'), got {value!r}")


def _password_pair(instance: UpstreamAuthConfig, _attribute: attrs.Attribute[str], value: str) -> None:
    if (instance.password or instance.password_file) and not instance.user:
        raise ValueError("'user' must be set with password or password_file")


@attrs.frozen
class UpstreamAuthConfig:
    """Credentials for an upstream registry: sent as basic auth, or to its token realm when it
    answers with a Bearer challenge. Empty: anonymous."""

    user: str = ""
    password: str = secret_field(default="")
    # A file whose content (surrounding whitespace stripped) is the password, read at load.
    password_file: str = attrs.field(default="", validator=_password_pair)


def _upstream_tls_pair(instance: UpstreamTlsConfig, _attribute: attrs.Attribute[str], value: str) -> None:
    if bool(instance.cert) != bool(instance.key):
        raise ValueError("'key' must be set together with cert (a client certificate for mTLS)")


@attrs.frozen
class UpstreamTlsConfig:
    """TLS towards an upstream: ``ca`` (PEM) to verify its certificate instead of the system's
    roots, ``cert`` and ``key`` (PEM) to present a client certificate, ``insecure_skip_verify``
    to verify nothing (one-way insecure TLS)."""

    ca: str = ""
    cert: str = ""
    key: str = attrs.field(default="", validator=_upstream_tls_pair)
    insecure_skip_verify: bool = False


@attrs.frozen
class RegistryConfig:
    """One upstream registry, as ociregistry's ``registries`` list: an upstream without an
    entry is reached anonymously over HTTPS."""

    name: str = attrs.field(validator=_registry_name)
    scheme: Literal["https", "http"] = "https"
    auth: UpstreamAuthConfig = UpstreamAuthConfig()
    tls: UpstreamTlsConfig = UpstreamTlsConfig()
    description: str = ""
    # Seconds to wait for a connection (TCP and TLS), and for each read of an answer.
    connect_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    read_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
