"""Descriptors, platforms and the referrers index."""

from __future__ import annotations

import json

import pytest

from swarmreg.digest import Digest
from swarmreg.errors import MANIFEST_INVALID, SwarmregError
from swarmreg.oci import mediatypes as mt
from swarmreg.oci.descriptor import Descriptor, Platform, parse_descriptor
from swarmreg.oci.manifest import parse_manifest, referrers_index
from tests.oci import fixtures as fx
from tests.oci.fixtures import dump, load, sha


def test_referrers_index_of_nothing_is_an_empty_index():
    body = referrers_index([])
    assert json.loads(body) == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}


def test_referrers_index_lists_artifact_type_and_annotations():
    sbom = parse_manifest(fx.OCI_ARTIFACT, mt.OCI_MANIFEST)
    image = parse_manifest(fx.OCI_IMAGE, mt.OCI_MANIFEST)
    document = load(fx.OCI_INDEX)
    document["subject"] = {"mediaType": mt.OCI_MANIFEST, "digest": fx.SUBJECT, "size": 1}
    del document["annotations"]
    index = parse_manifest(dump(document), mt.OCI_INDEX)

    body = referrers_index([sbom.descriptor(), image.descriptor(), index.descriptor()])
    assert body.isascii()
    answer = json.loads(body)
    assert answer["schemaVersion"] == 2 and answer["mediaType"] == mt.OCI_INDEX
    assert answer["manifests"] == [
        {"mediaType": mt.OCI_MANIFEST, "digest": str(sbom.digest), "size": sbom.size,
         "artifactType": "application/vnd.example.sbom.v1",
         "annotations": {"org.opencontainers.image.created": "2024-03-01T12:00:00Z",
                         "org.example.sbom.format": "spdx"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": str(image.digest), "size": image.size,
         "artifactType": mt.OCI_CONFIG,
         "annotations": {"org.opencontainers.image.base.name": "docker.io/library/alpine:3.19"}},
        # An index without artifactType omits it; no annotations, no key.
        {"mediaType": mt.OCI_INDEX, "digest": str(index.digest), "size": index.size},
    ]


def test_referrers_index_is_itself_a_valid_index():
    sbom = parse_manifest(fx.OCI_ARTIFACT, None)
    body = referrers_index([sbom.descriptor()])
    parsed = parse_manifest(body, mt.OCI_INDEX)
    assert parsed.children == (sbom.digest,)
    assert parsed.manifests[0].artifact_type == sbom.artifact_type


def test_referrers_index_escapes_non_ascii():
    descriptor = Descriptor(mt.OCI_MANIFEST, Digest.parse(sha("a")), 3,
                            annotations={"note": "caf\u00e9 \ud800"})
    body = referrers_index([descriptor])
    assert body.isascii()
    assert json.loads(body)["manifests"][0]["annotations"]["note"] == "caf\u00e9 \ud800"


def test_descriptor_round_trips_through_json():
    value = {"mediaType": mt.OCI_MANIFEST, "digest": sha("b"), "size": 10,
             "artifactType": "application/vnd.example+type", "urls": ["https://example.com/x"],
             "annotations": {"k": "v"},
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8",
                          "os.version": "6.1", "os.features": ["a"], "features": ["sse4"]}}
    descriptor = parse_descriptor(value, "manifests[0]", with_platform=True)
    assert descriptor.to_json() == value
    assert str(descriptor.platform) == "linux/arm64/v8"


def test_platform_is_ignored_outside_index_entries():
    value = {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha("b"), "size": 1, "platform": "junk"}
    assert parse_descriptor(value, "layers[0]").platform is None


def test_descriptor_is_frozen_and_hashable():
    descriptor = Descriptor(mt.OCI_CONFIG, Digest.parse(sha("c")), 5, annotations={"a": "b"})
    assert hash(descriptor) == hash(Descriptor(mt.OCI_CONFIG, Digest.parse(sha("c")), 5))
    with pytest.raises(TypeError):
        descriptor.annotations["a"] = "c"  # type: ignore[index]
    assert Platform("amd64", "linux") == Platform("amd64", "linux")


def test_descriptor_checks_its_field_types():
    with pytest.raises(TypeError):
        Descriptor(mt.OCI_CONFIG, sha("c"), 5)  # type: ignore[arg-type]


def test_parse_descriptor_errors_name_the_field():
    with pytest.raises(SwarmregError) as info:
        parse_descriptor({"mediaType": mt.OCI_CONFIG, "digest": sha("c")}, "config")
    assert info.value.code is MANIFEST_INVALID and info.value.detail["field"] == "config.size"
