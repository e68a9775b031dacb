"""The admin API's text answers: ociregistry's columnar lists, aligned as ``column -t`` aligns
them (each column as wide as its widest cell, two spaces between, no trailing spaces), one
header line of upper-case names; an empty cell reads ``-``, so every row splits into the same
fields. Free of any web framework (the answers are built from the index's JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from swarmreg.proxy.wire import STATUS_COLUMNS

# ociregistry shortens the digest in a by-digest URL to this many hex digits (the DIGEST column has it whole).
SHORT_DIGEST = 10


def columns(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` as ``column -t`` prints them."""
    widths: list[int] = []
    for row in rows:
        for index, cell in enumerate(row):
            if index == len(widths):
                widths.append(0)
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(cell.ljust(widths[index]) for index, cell in enumerate(row)).rstrip() for row in rows]
    return "".join(line + "\n" for line in lines)


def _cell(value: Any) -> str:
    # A cell is one field: whitespace inside would split it (a media type never has any, a tag can't).
    text = "-" if value is None or value == "" or value == [] else str(value)
    return "".join(text.split()) or "-"


def _url(repository: str, digest: str) -> str:
    algorithm, _, hex_digits = digest.partition(":")
    return f"{repository}@{algorithm}:{hex_digits[:SHORT_DIGEST]}"


def image_table(images: Sequence[Mapping[str, Any]]) -> str:
    """``/cmd/image/list``: each image, then a ``-`` line per blob it names (as ociregistry)."""
    if not images:
        return "no images found\n"
    rows = [["URL", "DIGEST", "MEDIATYPE", "SIZE", "CREATED", "PULLED"]]
    for image in images:
        rows.append([_cell(image["reference"]), _cell(image["digest"]), _cell(image["media_type"]),
                     _cell(image["size"]), _cell(image["created"]), _cell(image["accessed"])])
        rows += [["-", _cell(blob)] for blob in image.get("blobs", ())]
    return columns(rows)


def manifest_table(manifests: Sequence[Mapping[str, Any]]) -> str:
    """``/cmd/manifest/list``: one row per manifest, its tags comma-separated."""
    if not manifests:
        return "no manifests found\n"
    rows = [["URL", "DIGEST", "MEDIATYPE", "SIZE", "TAGS", "CREATED", "PULLED"]]
    rows += [[_url(m["repository"], m["digest"]), _cell(m["digest"]), _cell(m["media_type"]), _cell(m["size"]),
              _cell(",".join(m["tags"])), _cell(m["created"]), _cell(m["accessed"])] for m in manifests]
    return columns(rows)


def blob_table(blobs: Sequence[Mapping[str, Any]]) -> str:
    """``/cmd/blob/list``: ``MANIFESTS`` is ociregistry's REFCNT (manifests naming the blob),
    ``REPOSITORIES`` the repositories linking it."""
    if not blobs:
        return "no blobs found\n"
    rows = [["DIGEST", "SIZE", "MANIFESTS", "REPOSITORIES"]]
    rows += [[_cell(b["digest"]), _cell(b["size"]), _cell(b["manifests"]), _cell(b["repositories"])] for b in blobs]
    return columns(rows)


def prune_table(report: Mapping[str, Any]) -> str:
    """``/cmd/prune``: what was pruned (``pruned``; a list's child: ``pruned-child``) or, in a dry
    run, would be (``would-prune``, ``would-prune-child``)."""
    manifests = report.get("manifests", [])
    if not manifests:
        return "nothing to prune\n"
    verb = "would-prune" if report.get("dry_run") else "pruned"
    rows = [["ACTION", "URL", "DIGEST", "TAGS", "CREATED", "PULLED"]]
    rows += [[verb + ("-child" if m.get("parent") else ""), _url(m["repository"], m["digest"]), _cell(m["digest"]),
              _cell(",".join(m["tags"])), _cell(m["created"]), _cell(m["accessed"])] for m in manifests]
    return columns(rows)


def status_table(document: Mapping[str, Any]) -> str:
    """``/cmd/status``: a row per node (STATUS_COLUMNS); REASON, last, is free text."""
    rows = [[column.upper() for column in STATUS_COLUMNS]]
    rows += [[*(_cell(node[column]) for column in STATUS_COLUMNS[:-1]), " ".join(str(node["reason"] or "-").split())]
             for node in document["nodes"]]
    return columns(rows)


def report_table(report: Mapping[str, Any]) -> str:
    """``/cmd/gc``: the collector's report, one ``field value`` line each (nested values as JSON)."""
    rows = [[str(key), value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))]
            for key, value in report.items()]
    return columns([[key, _cell(value)] for key, value in rows]) if rows else "\n"
