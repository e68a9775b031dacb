"""One request of the conformance sequence, declared as data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class Step:
    """A registry request and what the OCI distribution spec says it should answer.

    ``url`` is a path (``/v2/...``) or ``$name``: an upload URL. A step with ``save="name"``
    saves the Location of its answer if that is 202 (an upload in progress); every later step on
    ``$name`` replaces it by the newer upload Location it is answered with, as clients do. Upload
    URLs carry implementation state, so they are used as given, with ``params`` merged into their
    query. A ``$name`` step whose upload was never opened is recorded as skipped.

    ``expect`` is the status (or statuses, where the spec leaves a choice) the spec calls for:
    never asserted against the reference, only reported where it departs from it. Where a target
    is not compared with the reference (a feature the reference lacks, a known difference), it is
    held to the spec instead: to ``expect``, to ``spec_headers`` (recorded header -> normalized
    value the spec requires; None: the spec forbids the header) and to ``spec_body`` (the
    normalized body the spec requires; None: not checked). ``content`` marks responses whose body
    is blob or manifest bytes (compared by digest and length). ``feature`` names an optional API
    (``"referrers"``) that the reference registry may not implement; a 404 on its ``probe`` step
    means the registry lacks it.
    """

    name: str
    workflow: str  # pull, push, discovery, management, errors, base
    method: str
    url: str
    expect: int | tuple[int, ...]
    params: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes | None = None
    stream: bool = False  # send body with Transfer-Encoding: chunked, no Content-Length
    save: str | None = None
    content: bool = False
    feature: str | None = None
    probe: bool = False  # a 404 here means the target does not implement ``feature``
    spec_headers: Mapping[str, str | None] = attrs.field(factory=dict)
    spec_body: Any = None
    note: str = ""

    @property
    def expected(self) -> tuple[int, ...]:
        return self.expect if isinstance(self.expect, tuple) else (self.expect,)

    @property
    def saved_url(self) -> str | None:
        return self.url[1:] if self.url.startswith("$") else None
