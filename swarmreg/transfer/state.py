"""Where ``swarmreg blob push`` records the upload it has open at an origin, so that the same
command run again continues it: one JSON file per origin, namespace and digest under
``$XDG_STATE_HOME/swarmreg/pushes/`` (``~/.local/state/swarmreg/pushes/``), held with an
exclusive lock while a push runs (a second push of the same blob to the same origin waits for
nothing: it is refused), removed once the blob is committed."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import attrs
import cattrs

from swarmreg.origin.wire import UPLOAD_ID

_converter = cattrs.Converter(forbid_extra_keys=True)


def state_dir() -> Path:
    """``$XDG_STATE_HOME/swarmreg``, or ``~/.local/state/swarmreg``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "swarmreg"


@attrs.frozen
class PushRecord:
    """An upload session a push opened: at ``origin`` (the URL as given), ``size`` bytes in all."""

    origin: str
    namespace: str
    digest: str
    uid: str = attrs.field(validator=attrs.validators.matches_re(UPLOAD_ID))
    size: int


class Busy(Exception):
    """Another push of the same blob to the same origin holds the record."""


class PushState:
    """The record of one origin, namespace and digest, locked; use as a context manager.

    The record's file is its lock too (flock), written in place and removed under the lock, so
    it never outlives the push that committed. ``load`` gives None when there is none (or it is
    unreadable, or of another push). A directory that cannot be written leaves the push without
    a record (``usable`` is False, ``error`` says why), not failed.
    """

    def __init__(self, origin: str, namespace: str, digest: str, root: Path | None = None) -> None:
        self.key = (origin, namespace, digest)
        name = hashlib.sha256("\0".join(self.key).encode()).hexdigest()[:32]
        self.path = (root or state_dir()) / "pushes" / f"{name}.json"
        self._fd = -1
        self.error: OSError | None = None

    @property
    def usable(self) -> bool:
        return self._fd >= 0

    def __enter__(self) -> PushState:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = self._locked()
        except OSError as error:
            self.error = error
        return self

    def _locked(self) -> int:
        """The record's descriptor, locked; Busy when another push holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except BlockingIOError:
                os.close(fd)
                raise Busy(str(self.path)) from None
            except FileNotFoundError:
                pass
            os.close(fd)  # removed (committed) by the push that held it meanwhile: take the new one

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def load(self) -> PushRecord | None:
        if not self.usable:
            return None
        try:
            record = _converter.structure(json.loads(os.pread(self._fd, 1 << 16, 0)), PushRecord)
        except (OSError, ValueError, cattrs.BaseValidationError):
            return None
        return record if (record.origin, record.namespace, record.digest) == self.key else None

    def save(self, record: PushRecord) -> None:
        """Write ``record`` over the old one; a failure (a full disk) is kept in ``error``."""
        if not self.usable:
            return
        data = json.dumps(_converter.unstructure(record)).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as error:
            self.error = error

    def clear(self) -> None:
        """Remove the record (the blob is committed, or the session is gone)."""
        if self.usable:
            try:
                os.ftruncate(self._fd, 0)
                self.path.unlink(missing_ok=True)
            except OSError as error:
                self.error = error
