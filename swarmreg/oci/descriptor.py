"""Content descriptors (image-spec descriptor.md), their parsing, and the referrers index."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import attrs

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_INVALID, SwarmregError
from swarmreg.oci.mediatypes import NONDISTRIBUTABLE_LAYERS, OCI_INDEX

# RFC 6838 type "/" subtype with restricted-name characters (section 4.2), which the image spec
# requires of every descriptor mediaType and artifactType. Parameters are not allowed.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
MAX_SIZE = 2**63 - 1  # sizes are int64 in the image spec


def freeze_mapping(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of ``mapping``, so a frozen value cannot change under its holder."""
    return MappingProxyType(dict(mapping or {}))


def _str_tuple(items: Iterable[str]) -> tuple[str, ...]:
    # ``converter=tuple`` would do the same, but mypy cannot tell the element type from it.
    return tuple(items)


def invalid(where: str, reason: str) -> SwarmregError:
    """A MANIFEST_INVALID error about field ``where`` (a JSON path like ``layers[2].size``)."""
    message = f"manifest invalid: {where}: {reason}" if where else f"manifest invalid: {reason}"
    detail = {"field": where, "reason": reason} if where else {"reason": reason}
    return SwarmregError(MANIFEST_INVALID, message, detail)


@attrs.frozen
class Platform:
    """The platform an index entry runs on (``platform`` of an image index or manifest list)."""

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # Docker manifest lists only

    def __str__(self) -> str:
        """``os/architecture[/variant]``, as docker and buildx print platforms."""
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, with only the fields that are set."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version is not None:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant is not None:
            out["variant"] = self.variant
        if self.features:
            out["features"] = list(self.features)
        return out


@attrs.frozen
class Descriptor:
    """A reference to content by media type, digest and size, with optional metadata."""

    media_type: str = attrs.field(validator=attrs.validators.instance_of(str))
    digest: Digest = attrs.field(validator=attrs.validators.instance_of(Digest))
    size: int = attrs.field(validator=attrs.validators.instance_of(int))
    artifact_type: str | None = None
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)
    urls: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    platform: Platform | None = None

    @property
    def external(self) -> bool:
        """True for a non-distributable layer with URLs: the registry need not hold its blob."""
        return self.media_type in NONDISTRIBUTABLE_LAYERS and bool(self.urls)

    def to_json(self) -> dict[str, Any]:
        """The descriptor's JSON object, omitting unset optional fields."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


def referrers_index(descriptors: Iterable[Descriptor]) -> bytes:
    """The body of a referrers API answer: an OCI image index listing ``descriptors`` in order.

    Build each entry with ``Manifest.descriptor()`` so it carries the referrer's artifactType and
    annotations as the distribution spec requires. The output is compact ASCII JSON.
    """
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [descriptor.to_json() for descriptor in descriptors]}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def parse_media_type(value: Any, where: str) -> str:
    """A required RFC 6838 media type string, else MANIFEST_INVALID."""
    if not isinstance(value, str):
        raise invalid(where, "must be a media type string")
    if not _MEDIA_TYPE.fullmatch(value):
        raise invalid(where, f"{value[:300]!r} is not an RFC 6838 media type")
    return value


def parse_annotations(value: Any, where: str) -> Mapping[str, str]:
    """An optional string-to-string map (absent or null gives an empty map)."""
    if value is None:
        return freeze_mapping(None)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(where, "must be an object of strings")
    return freeze_mapping(value)


def parse_artifact_type(value: Any, where: str) -> str | None:
    """An optional artifactType: absent, null or empty gives None (the spec's "empty or missing")."""
    if value is None or value == "":
        return None
    return parse_media_type(value, where)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid(where, "must be an array of strings")
    return tuple(value)


def _optional_string(document: dict[str, Any], key: str, where: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{where}.{key}", "must be a string")
    return value


def _digest(value: Any, where: str) -> Digest:
    if not isinstance(value, str):
        raise invalid(where, "is required and must be a digest string")
    try:
        return Digest.parse(value)
    except SwarmregError as error:
        # Keep DIGEST_INVALID, as distribution answers for a malformed descriptor digest,
        # and say which descriptor carried it.
        raise SwarmregError(error.code, f"{where}: {error.message}",
                            {"field": where, "digest": value[:200]}) from None


def _size(value: Any, where: str) -> int:
    # bool is an int in Python but not a JSON number.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise invalid(where, "is required and must be an integer from 0 to 2^63-1")
    return value


def parse_platform(value: Any, where: str) -> Platform:
    """A platform object: architecture and os strings, the rest optional."""
    if not isinstance(value, dict):
        raise invalid(where, "must be an object")
    for key in ("architecture", "os"):
        if not isinstance(value.get(key), str):
            raise invalid(f"{where}.{key}", "is required and must be a string")
    return Platform(
        architecture=value["architecture"],
        os=value["os"],
        variant=_optional_string(value, "variant", where),
        os_version=_optional_string(value, "os.version", where),
        os_features=_strings(value.get("os.features"), f"{where}.os.features"),
        features=_strings(value.get("features"), f"{where}.features"),
    )


def _check_urls(urls: tuple[str, ...], where: str) -> None:
    # Like distribution, only absolute http(s) URLs without a fragment may stand in for a blob.
    for i, url in enumerate(urls):
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise invalid(f"{where}.urls[{i}]", "must be an absolute http or https URL without a fragment")


def parse_descriptor(value: Any, where: str, *, with_platform: bool = False) -> Descriptor:
    """Parse a descriptor JSON object found at ``where`` (for error messages).

    mediaType, digest (sha256 or sha512) and size are required; urls, annotations and artifactType
    are checked when present; ``platform`` is read only when ``with_platform`` (index entries)
    and ignored elsewhere, as the image spec defines it only there. Raises MANIFEST_INVALID, or
    DIGEST_INVALID for a malformed digest or one of another algorithm.
    """
    if not isinstance(value, dict):
        raise invalid(where, "must be a descriptor object")
    media_type = parse_media_type(value.get("mediaType"), f"{where}.mediaType")
    digest = _digest(value.get("digest"), f"{where}.digest")
    size = _size(value.get("size"), f"{where}.size")
    urls = _strings(value.get("urls"), f"{where}.urls")
    descriptor = Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=parse_artifact_type(value.get("artifactType"), f"{where}.artifactType"),
        annotations=parse_annotations(value.get("annotations"), f"{where}.annotations"),
        urls=urls,
        platform=(parse_platform(value["platform"], f"{where}.platform")
                  if with_platform and value.get("platform") is not None else None),
    )
    if descriptor.external:
        _check_urls(urls, where)
    return descriptor
