"""Turn one HTTP response into what the spec makes comparable between registries.

Kept: the status; the spec-relevant headers, normalized; the body, as error codes (error
envelopes), digest and length (blob and manifest bytes) or parsed JSON (API documents). Masked:
upload ids, query state in upload URLs, digests the sequence did not create (e.g. from
timestamps), the host part of URLs on the target itself. Dropped: lengths and types of bodies
whose bytes are not part of the contract (JSON formatting, error messages, empty bodies).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

RECORDED_HEADERS = (
    "docker-content-digest", "location", "range", "content-range", "content-length",
    "content-type", "docker-upload-uuid", "link", "oci-subject", "oci-filters-applied",
    "docker-distribution-api-version",
)
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}(?![0-9a-f])|sha512:[0-9a-f]{128}")
UPLOAD_PATH = re.compile(r"(/blobs/uploads/)[^/?#]+")
LINK = re.compile(r"<([^>]*)>\s*;\s*rel=\"?([^\";]+)\"?")


def mask_text(text: str, known: Collection[str]) -> str:
    """Replace UUIDs and unknown digests in ``text`` by placeholders."""
    text = DIGEST.sub(lambda m: m.group(0) if m.group(0) in known else m.group(0)[:7] + "<unknown>", text)
    return UUID.sub("<uuid>", text)


def mask_json(document: Any, known: Collection[str]) -> Any:
    if isinstance(document, dict):
        return {k: mask_json(v, known) for k, v in document.items()}
    if isinstance(document, list):
        return [mask_json(v, known) for v in document]
    if isinstance(document, str):
        return mask_text(document, known)
    return document


def relative_url(url: str, base_url: str) -> str:
    """A URL on the target itself as path+query; another host keeps a marker of being external."""
    parts, base = urlsplit(url), urlsplit(base_url)
    if parts.netloc and parts.netloc != base.netloc:
        return f"<external>{parts.path}"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def normalize_location(value: str, base_url: str, known: Collection[str]) -> str:
    path = relative_url(value, base_url)
    if "/blobs/uploads/" in path:
        path = UPLOAD_PATH.sub(r"\1<upload>", path.split("?", 1)[0])
    return mask_text(path, known)


def normalize_link(value: str, base_url: str, known: Collection[str]) -> str:
    """``<url>; rel="next"`` with the URL relative and its query parameters sorted."""
    found = []
    for url, rel in LINK.findall(value):
        parts = urlsplit(relative_url(url, base_url))
        query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
        found.append(f"<{parts.path}{'?' + query if query else ''}>; rel={rel}")
    return mask_text(", ".join(found) if found else f"<unparsed>{value}", known)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def error_codes(document: Any) -> list[str] | None:
    """The sorted distinct codes of a spec error envelope, or None if it is not one."""
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        return sorted({str(e.get("code")) for e in document["errors"] if isinstance(e, dict)})
    return None


def _descriptor_digest(descriptor: Any) -> str:
    return descriptor.get("digest", "") if isinstance(descriptor, dict) else ""


def sort_descriptors(document: Any) -> Any:
    """Image indexes (referrers answers) list descriptors in no specified order: sort them."""
    if isinstance(document, dict) and isinstance(document.get("manifests"), list):
        return {**document, "manifests": sorted(document["manifests"], key=_descriptor_digest)}
    return document


def normalize_body(method: str, status: int, body: bytes, content: bool,
                   known: Collection[str]) -> Any:
    """The comparable form of a body (see the module docstring)."""
    if method == "HEAD" or not body:
        return None
    document = parse_json(body)
    codes = error_codes(document)
    if codes is not None:
        return {"errors": codes}
    if content and 200 <= status < 300:
        return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    if document is None:
        return {"non-json-body": True}
    return mask_json(sort_descriptors(document), known)


def normalize_headers(method: str, status: int, headers: Mapping[str, str], body_form: Any,
                      content: bool, base_url: str, known: Collection[str]) -> dict[str, str]:
    """The recorded headers in comparable form; see the module docstring for the rules."""
    out: dict[str, str] = {}
    success = 200 <= status < 300
    for name in RECORDED_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "location":
            value = normalize_location(value, base_url, known)
        elif name == "link":
            value = normalize_link(value, base_url, known)
        elif name == "docker-upload-uuid":
            value = "present"
        elif name == "content-type":
            value = value.split(";", 1)[0].strip().lower()
            if not (body_form is not None or (method == "HEAD" and success)):
                continue  # the type of an empty or HEAD error body is not part of the contract
        elif name == "content-length":
            if not (success and (content or method == "HEAD")):
                continue  # JSON formatting and error messages may differ in length
        else:
            value = mask_text(value, known)
        out[name] = value
    return out
