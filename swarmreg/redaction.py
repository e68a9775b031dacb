"""Configuration fields that hold secrets: ``repr`` and ``swarmreg config show`` redact them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

REDACTED = "<redacted>"


def redacted(value: Any) -> Any:
    """A secret's stand-in: ``<redacted>`` for a set value, each value of a table (a user's
    password hash) so, an unset one as it is (an empty secret is worth knowing)."""
    if isinstance(value, Mapping):
        return {key: REDACTED for key in value}
    return REDACTED if value else value


def redact_url(url: str) -> str:
    """``url`` with the password in it (``user:password@``, a ``password=`` parameter) redacted:
    a database URL as logs and ``swarmreg config show`` print it."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # no URL (a file name): no password in it
        return url
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))
    return re.sub(r"(password=)[^&\s]*", rf"\1{REDACTED}", url)


def url_field(**kwargs: Any) -> Any:
    """An attrs field that may hold a URL with a password: ``repr`` and ``swarmreg config show``
    print it through ``redact_url``."""
    return attrs.field(repr=lambda value: repr(redact_url(value)), metadata={"redact": redact_url}, **kwargs)


def secret_field(**kwargs: Any) -> Any:
    """An attrs field that holds a secret (a key, a password hash): ``repr`` and ``swarmreg config
    show`` print ``<redacted>`` for it, and launchers keep it off command lines (``secret_keys``)."""
    return attrs.field(repr=lambda value: repr(redacted(value)), metadata={"secret": True}, **kwargs)
