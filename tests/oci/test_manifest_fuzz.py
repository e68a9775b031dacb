"""Fuzzing parse_manifest: whatever arrives, it returns a Manifest or raises SwarmregError."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmreg.digest import Digest
from swarmreg.errors import SwarmregError
from swarmreg.oci import mediatypes as mt
from swarmreg.oci.manifest import MAX_MANIFEST_SIZE, Manifest, parse_manifest
from tests.oci import fixtures as fx

FUZZ = settings(max_examples=10_000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(sorted(mt.MANIFEST_TYPES | mt.SCHEMA1_MANIFESTS | mt.GENERIC_CONTENT_TYPES)),
    st.sampled_from([f"{t}; charset=utf-8" for t in sorted(mt.MANIFEST_TYPES)]),
    st.text(max_size=60),
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children,
                                                                     max_size=5),
    max_leaves=30,
)

# Cheap wrong-typed values (NaN included) for the fields of mutated manifests.
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=4), children,
                                                                     max_size=2),
    max_leaves=4,
)


def mostly(good, bad):
    """Prefer good values (three branches in four), so examples get past the first checks."""
    return st.one_of(good, good, good, bad)


HEX_DIGESTS = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
DIGESTS = mostly(st.one_of(HEX_DIGESTS, st.just(fx.OCI_LAYER)),
                 st.one_of(st.sampled_from(["sha384:" + "a" * 96, "sha512:" + "a" * 64, "sha256:", "sha256:AB"]), JUNK))
MEDIA_TYPES = mostly(st.sampled_from(sorted(mt.MANIFEST_TYPES | {mt.OCI_CONFIG, mt.OCI_EMPTY,
                                                                 mt.DOCKER_FOREIGN_LAYER})),
                     st.one_of(st.text(max_size=30), JUNK))
SIZES = mostly(st.integers(min_value=0, max_value=2**63 - 1),
               st.one_of(st.integers(min_value=-2, max_value=2**64), JUNK))
STRING_MAPS = mostly(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), JUNK)
PLATFORMS = mostly(
    st.fixed_dictionaries({"architecture": st.text(max_size=8), "os": st.text(max_size=8)},
                          optional={"variant": st.text(max_size=4), "os.version": JUNK,
                                    "os.features": JUNK, "features": JUNK}),
    JUNK)
URLS = mostly(st.lists(st.sampled_from(["https://example.com/x", "ftp://x", "http://a/#f",
                                        "http://[::1", ""]), max_size=2), JUNK)
DESCRIPTORS = mostly(
    st.fixed_dictionaries({"mediaType": MEDIA_TYPES, "digest": DIGESTS, "size": SIZES},
                          optional={"annotations": STRING_MAPS, "urls": URLS,
                                    "artifactType": MEDIA_TYPES, "platform": PLATFORMS}),
    JUNK)
DESCRIPTOR_LISTS = mostly(st.lists(DESCRIPTORS, max_size=4), JUNK)
REPLACEMENTS = st.one_of(MEDIA_TYPES, DIGESTS, SIZES, STRING_MAPS, PLATFORMS, URLS, DESCRIPTORS,
                         DESCRIPTOR_LISTS, st.sampled_from([1, 2, 3]))
# Mostly no type or a manifest type, so the body's own checks run.
SHAPED_CONTENT_TYPES = mostly(st.one_of(st.none(), st.sampled_from(sorted(mt.MANIFEST_TYPES))),
                              CONTENT_TYPES)
FIELD_NAMES = ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject",
               "artifactType", "annotations", "digest", "size", "urls", "platform", "os"]
FIXTURES = [fx.load(body) for body in (fx.DOCKER_IMAGE, fx.DOCKER_LIST, fx.OCI_IMAGE,
                                       fx.OCI_ARTIFACT, fx.OCI_INDEX)]


def containers(value: Any, path: tuple = ()) -> list[tuple]:
    """The paths of every object and array inside ``value``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [path] + [p for key, child in items for p in containers(child, (*path, key))]


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    """A real manifest with one to three fields replaced, added or deleted: most examples get
    deep into the checks, where hand-written cases might miss a combination."""
    document = copy.deepcopy(draw(st.sampled_from(FIXTURES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(containers(document)))
        target = document
        for key in path:
            target = target[key]
        if isinstance(target, dict):
            key = draw(st.sampled_from(sorted(set(target) | set(FIELD_NAMES))))
            if draw(st.booleans()) and key in target:
                del target[key]
            else:
                target[key] = draw(REPLACEMENTS)
        elif target:
            target[draw(st.integers(0, len(target) - 1))] = draw(REPLACEMENTS)
        else:
            target.append(draw(REPLACEMENTS))
    return document


def check(body: bytes, content_type: str | None) -> None:
    try:
        manifest = parse_manifest(body, content_type)
    except SwarmregError as error:
        json.dumps(error.envelope())  # every error can be sent as the spec's envelope
        return
    assert isinstance(manifest, Manifest)
    assert manifest.digest == Digest.of(body) and manifest.size == len(body) <= MAX_MANIFEST_SIZE
    assert manifest.media_type in mt.MANIFEST_TYPES
    assert manifest.digest not in manifest.blobs + manifest.children
    if manifest.is_index:
        assert manifest.blobs == () and manifest.config is None
    else:
        assert manifest.children == () and manifest.blobs[0] == manifest.config.digest


@FUZZ
@given(body=st.binary(max_size=2048), content_type=CONTENT_TYPES)
def test_arbitrary_bytes(body, content_type):
    check(body, content_type)


@FUZZ
@given(value=JSON_VALUES, content_type=CONTENT_TYPES)
def test_arbitrary_json_values(value, content_type):
    check(json.dumps(value).encode(), content_type)


@FUZZ
@given(value=mutated_manifests(), content_type=SHAPED_CONTENT_TYPES)
def test_mutated_manifests(value, content_type):
    check(json.dumps(value).encode(), content_type)
