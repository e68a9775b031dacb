"""What ``blob push`` and ``blob pull`` share: their one-line errors, the URLs they are given, and
reading a file through a hash with progress."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from swarmreg.config import Address
from swarmreg.errors import BAD_GATEWAY, SwarmregError
from swarmreg.transfer.progress import meter

# Reads and writes of files, and the hashing of what is already there.
READ = 4 << 20
# Exit statuses: a transfer that failed, options that cannot be used, an interrupt (as shells count it).
FAILED, USAGE, INTERRUPTED = 1, 2, 130


class TransferError(Exception):
    """The command failed: the one line to print, and the exit status. ``unreachable``: no
    answer came, for this reason (the client's log may say more: see Reasons); ``hint``: what
    may help, said last."""

    def __init__(self, message: str, status: int = FAILED, unreachable: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable
        self.hint = ""

    def line(self, reasons: Reasons) -> str:
        """The line to print: the message, why no answer came, the hint."""
        why = f" ({reasons.last or self.unreachable})" if self.unreachable else ""
        return f"{self}{why}{': ' if self.hint else ''}{self.hint}"


class Reasons(logging.Handler):
    """Why the clients' last request got no answer: they log it (``... failed: ConnectError:
    [SSL: CERTIFICATE_VERIFY_FAILED] ...``), and their errors only name the kind of failure."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        _, failed, reason = record.getMessage().partition(" failed: ")
        if failed:
            self.last = " ".join(reason.split())[:300]


def endpoint(url: str, option: str) -> tuple[Address, bool]:
    """``http[s]://host:port`` (or ``host:port``, plain HTTP) as the address and whether it is
    HTTPS; TransferError (USAGE) for anything else."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
    except (KeyError, ValueError):
        port = None
    if port is None or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        raise TransferError(f"{option} {url!r} is not a URL of the form http[s]://HOST:PORT", USAGE)
    return Address(parts.hostname, port), parts.scheme == "https"


def client_tls(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The context for an HTTPS origin: the system's CAs or ``ca``, and a client certificate if given."""
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TransferError(f"cannot load the TLS files: {getattr(error, 'strerror', None) or error}", USAGE) from None
    return context


def refused(error: SwarmregError, role: str, url: str, credentials: str = "") -> TransferError:
    """The line for an error a client of ``role`` at ``url`` raised (its answer, or no answer);
    ``credentials`` says how to give the ones it refused."""
    if error.code is BAD_GATEWAY and error.message.startswith(f"{role} unreachable"):
        return TransferError(f"cannot reach the {role} at {url}",
                             unreachable=error.message.partition(": ")[2] or "no answer")
    # The clients report a refusal of the cluster credentials as BAD_GATEWAY naming it (swarmreg.http.client).
    refusal = error.detail.get("upstream") if isinstance(error.detail, dict) else None
    if error.code is BAD_GATEWAY and refusal in ("UNAUTHORIZED", "DENIED"):
        return TransferError(f"the {role} at {url} refused the credentials ({refusal}){': ' if credentials else ''}"
                             f"{credentials}")
    return TransferError(f"the {role} at {url} answered {error.code.code}: {error.message}")


def hash_file(fd: int, hasher: Any, end: int, description: str) -> None:
    """Feed bytes [0, end) of the open file ``fd`` to ``hasher``, showing progress."""
    progress = meter(description, end)
    try:
        position = 0
        while position < end:
            data = os.pread(fd, min(READ, end - position), position)
            if not data:
                raise TransferError(f"{description}: the file shrank while it was read")
            hasher.update(data)
            position += len(data)
            progress.advance(len(data))
    finally:
        progress.close()
