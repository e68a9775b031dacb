"""Configuration fields that hold secrets: ``repr`` and ``swarmreg config show`` redact them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

REDACTED = "<redacted>"


def redacted(value: Any) -> Any:
    """A secret's stand-in: ``<redacted>`` for a set value, each value of a table (a user's
    password hash) so, an unset one as it is (an empty secret is worth knowing)."""
    if isinstance(value, Mapping):
        return {key: REDACTED for key in value}
    return REDACTED if value else value


def secret_field(**kwargs: Any) -> Any:
    """An attrs field that holds a secret (a key, a password hash): ``repr`` and ``swarmreg config
    show`` print ``<redacted>`` for it, and launchers keep it off command lines (``secret_keys``)."""
    return attrs.field(repr=lambda value: repr(redacted(value)), metadata={"secret": True}, **kwargs)
