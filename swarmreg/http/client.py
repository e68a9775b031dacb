"""What every client of our own HTTP APIs shares: reading the JSON error envelope back."""

from __future__ import annotations

import httpx

from swarmreg.errors import BAD_GATEWAY, SwarmregError, error_code


def envelope_error(response: httpx.Response) -> SwarmregError | None:
    """The error a response's JSON envelope carries, None without one (or with an unknown code)."""
    try:
        entry = response.json()["errors"][0]
        return SwarmregError(error_code(entry["code"]), entry.get("message"), entry.get("detail"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def raise_for_error(response: httpx.Response, service: str) -> None:
    """Raise the SwarmregError an error response describes; one without an envelope is BAD_GATEWAY."""
    if response.is_success:
        return
    error = envelope_error(response)
    if error is None:
        error = SwarmregError(BAD_GATEWAY, f"{service} answered {response.status_code}",
                              {"status": response.status_code})
    raise error


def transport_reason(error: Exception) -> str:
    """A short reason for a failed request: the error's type and message (never a traceback)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
