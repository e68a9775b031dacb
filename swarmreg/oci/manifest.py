"""Parsing pushed manifests: Docker schema2 images and lists, OCI images and indexes.

``parse_manifest`` checks what a registry must check before storing a manifest's exact bytes
and extracts what it needs afterwards: the blobs that must be present, the child manifests of
an index, the subject and artifactType for the referrers API. It never fetches anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import attrs

from swarmreg.digest import CANONICAL, Digest
from swarmreg.errors import MANIFEST_INVALID, SwarmregError
from swarmreg.oci.descriptor import (
    Descriptor,
    Platform,
    freeze_mapping,
    invalid,
    parse_annotations,
    parse_artifact_type,
    parse_descriptor,
    referrers_index,
)
from swarmreg.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GENERIC_CONTENT_TYPES,
    INDEX_MANIFESTS,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    OCI_MANIFEST_TYPES,
    SCHEMA1_MANIFESTS,
    base_media_type,
)

__all__ = ["MAX_MANIFEST_SIZE", "Descriptor", "Manifest", "Platform", "manifest_too_large",
           "parse_manifest", "referrers_index"]

# The distribution spec: "Client and registry implementations SHOULD expect to be able to support
# manifest pushes of at least 4 megabytes" (distribution's maxManifestBodySize is the same 4 MiB).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

_SCHEMA1_REFUSAL = "Docker schema1 manifests are not supported: push a schema2 or OCI manifest"


@attrs.frozen
class Manifest:
    """A parsed manifest; ``digest`` and ``size`` are those of the exact bytes pushed."""

    media_type: str
    digest: Digest
    size: int
    # Blobs the registry must hold: config then layers (first occurrence, external layers left
    # out); empty for indexes.
    blobs: tuple[Digest, ...]
    # Manifests an index lists (may be missing from the registry); empty for image manifests.
    children: tuple[Digest, ...]
    subject: Digest | None
    # What the referrers API reports: artifactType, else an image manifest's config.mediaType.
    artifact_type: str | None
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return self.media_type in INDEX_MANIFESTS

    def descriptor(self) -> Descriptor:
        """This manifest as a referrers index entry (with artifactType and annotations)."""
        return Descriptor(media_type=self.media_type, digest=self.digest, size=self.size,
                          artifact_type=self.artifact_type, annotations=self.annotations)


def manifest_too_large(size: int, limit: int) -> SwarmregError:
    """The refusal of a manifest over ``limit`` bytes: ``413`` with ``MANIFEST_INVALID``.

    The distribution spec: "A registry that enforces this limit SHOULD respond to a request to
    push a manifest over this limit with a response code ``413 Payload Too Large``". It names no
    error code for it, and a JSON error body must use one of its codes: MANIFEST_INVALID.
    ``size`` is what was read (at least limit + 1).
    """
    return SwarmregError(MANIFEST_INVALID, f"manifest invalid: larger than {limit} bytes",
                         {"size": size, "limit": limit}, status=413)


def parse_manifest(body: bytes, content_type: str | None, *, algorithm: str = CANONICAL) -> Manifest:
    """Validate a pushed manifest and extract its references.

    The manifest's own digest is taken with ``algorithm``: sha256 unless the manifest is put
    under a digest of another algorithm (``PUT /v2/<name>/manifests/sha512:...``), which
    must then be verified with that algorithm.

    ``content_type`` is the request's Content-Type header (parameters ignored). The manifest type
    comes from the header when it names a manifest type, else from the body's ``mediaType``, else
    from the body's shape (``manifests``: OCI index; ``config``/``layers``: OCI manifest). When
    both header and body name a type they must agree. Raises SwarmregError: MANIFEST_INVALID for
    anything malformed, ambiguous, self-referencing or schema1; DIGEST_INVALID for a
    descriptor digest that is malformed or of neither sha256 nor sha512; a body over MAX_MANIFEST_SIZE is refused
    with 413 (``manifest_too_large``).
    """
    if len(body) > MAX_MANIFEST_SIZE:
        raise manifest_too_large(len(body), MAX_MANIFEST_SIZE)
    data = bytes(body)
    header = _check_header(content_type)
    document = _load_json(data)
    if not isinstance(document, dict):
        raise invalid("", "must be a JSON object")
    _check_schema_version(document.get("schemaVersion"))
    media_type = _resolve_media_type(header, document)
    _check_unambiguous(media_type, document)

    digest = Digest.of(data, algorithm)
    if media_type in INDEX_MANIFESTS:
        manifest = _index(media_type, digest, len(data), document)
    else:
        manifest = _image(media_type, digest, len(data), document)
    if digest in manifest.blobs or digest in manifest.children or digest == manifest.subject:
        raise SwarmregError(MANIFEST_INVALID, "manifest invalid: the manifest references itself",
                            {"digest": str(digest)})
    return manifest


def _check_header(content_type: str | None) -> str:
    # Returns the header's media type if it names a manifest type, else "" (absent or generic).
    header = base_media_type(content_type)
    if header in SCHEMA1_MANIFESTS:
        raise SwarmregError(MANIFEST_INVALID, f"manifest invalid: {_SCHEMA1_REFUSAL}",
                            {"mediaType": header})
    if header in MANIFEST_TYPES:
        return header
    if header in GENERIC_CONTENT_TYPES or header == "":
        return ""
    raise SwarmregError(MANIFEST_INVALID,
                        f"manifest invalid: unsupported manifest media type {header[:200]!r}",
                        {"mediaType": header[:200], "supported": sorted(MANIFEST_TYPES)})


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity: Python extensions, not JSON."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(name)


def _load_json(data: bytes) -> Any:
    # The refusals say where in their own words: a decoder's exception text is no part of an
    # answer (docs/security.md), even where it is harmless.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid("", f"not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        # NaN and Infinity are Python extensions, not JSON; deep nesting hits the recursion limit.
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise invalid("", f"not valid JSON at line {error.lineno} column {error.colno}") from None
    except _NotJson:
        raise invalid("", "not valid JSON: NaN and Infinity are no JSON values") from None
    except RecursionError:
        raise invalid("", "not valid JSON: nested too deeply") from None
    except ValueError:  # an integer too long to convert
        raise invalid("", "not valid JSON: a number is too long") from None


def _check_schema_version(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 2:
            return
        if value == 1:
            raise SwarmregError(MANIFEST_INVALID, f"manifest invalid: {_SCHEMA1_REFUSAL}",
                                {"field": "schemaVersion"})
    raise invalid("schemaVersion", "is required and must be 2")


def _resolve_media_type(header: str, document: dict[str, Any]) -> str:
    declared = document.get("mediaType")
    if declared == "":
        declared = None  # empty means absent, as in distribution's OCI index check
    if declared is not None:
        if not isinstance(declared, str):
            raise invalid("mediaType", "must be a string")
        if declared in SCHEMA1_MANIFESTS:
            raise SwarmregError(MANIFEST_INVALID, f"manifest invalid: {_SCHEMA1_REFUSAL}",
                                {"mediaType": declared})
        if declared not in MANIFEST_TYPES:
            raise invalid("mediaType", f"unsupported manifest media type {declared[:200]!r}")
    if header:
        if declared is not None and declared != header:
            raise SwarmregError(
                MANIFEST_INVALID,
                f"manifest invalid: Content-Type {header} does not match the manifest's "
                f"mediaType {declared}",
                {"contentType": header, "mediaType": declared})
        if declared is None and header in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
            # Docker's formats require the field (distribution refuses them without it);
            # only the OCI ones made it optional.
            raise invalid("mediaType", f"is required in a {header} manifest")
        return header
    if declared is not None:
        return declared
    # No type anywhere: the image spec's mediaType is only a SHOULD, so tell by the shape.
    if document.get("manifests") is not None:
        return OCI_INDEX
    if document.get("config") is not None or document.get("layers") is not None:
        return OCI_MANIFEST
    raise invalid("", "cannot tell the manifest type: no Content-Type, no mediaType, and neither "
                      "manifests nor config/layers")


def _check_unambiguous(media_type: str, document: dict[str, Any]) -> None:
    # A document that is both an index and an image manifest could be read two ways by two
    # clients (CVE-2021-41190); distribution refuses it in validateIndex/validateManifest.
    if media_type in INDEX_MANIFESTS:
        if document.get("config") is not None or document.get("layers") is not None:
            raise invalid("", "an index must not have config or layers")
    elif document.get("manifests") is not None:
        raise invalid("", "an image manifest must not have manifests")


def _array(value: Any, where: str) -> list[Any]:
    # Go encoders write a nil slice as null, so null (or absence) is an empty array.
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(where, "must be an array")
    return value


def _unique(digests: Iterable[Digest]) -> tuple[Digest, ...]:
    return tuple(dict.fromkeys(digests))


def _oci_fields(media_type: str, document: dict[str, Any]) -> tuple[Mapping[str, str], Digest | None, str | None]:
    # annotations, subject and artifactType exist in the OCI formats only; Docker's formats
    # define none of them and distribution ignores them there, so do we.
    if media_type not in OCI_MANIFEST_TYPES:
        return freeze_mapping(None), None, None
    subject = document.get("subject")
    return (
        parse_annotations(document.get("annotations"), "annotations"),
        parse_descriptor(subject, "subject").digest if subject is not None else None,
        parse_artifact_type(document.get("artifactType"), "artifactType"),
    )


def _image(media_type: str, digest: Digest, size: int, document: dict[str, Any]) -> Manifest:
    if document.get("config") is None:
        raise invalid("config", "is required")
    config = parse_descriptor(document["config"], "config")
    layers = tuple(parse_descriptor(layer, f"layers[{i}]")
                   for i, layer in enumerate(_array(document.get("layers"), "layers")))
    annotations, subject, artifact_type = _oci_fields(media_type, document)
    return Manifest(
        media_type=media_type, digest=digest, size=size,
        blobs=_unique([config.digest, *(layer.digest for layer in layers if not layer.external)]),
        children=(), subject=subject,
        # The distribution spec's referrers rule: artifactType, else config.mediaType.
        artifact_type=artifact_type or config.media_type,
        annotations=annotations, config=config, layers=layers,
    )


def _index(media_type: str, digest: Digest, size: int, document: dict[str, Any]) -> Manifest:
    manifests = tuple(parse_descriptor(entry, f"manifests[{i}]", with_platform=True)
                      for i, entry in enumerate(_array(document.get("manifests"), "manifests")))
    annotations, subject, artifact_type = _oci_fields(media_type, document)
    return Manifest(
        media_type=media_type, digest=digest, size=size,
        blobs=(), children=_unique(entry.digest for entry in manifests), subject=subject,
        artifact_type=artifact_type, annotations=annotations, manifests=manifests,
    )
