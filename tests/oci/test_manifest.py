"""parse_manifest: media types, type resolution, extraction, and every refusal."""

from __future__ import annotations

import hashlib
import json

import attrs
import pytest

from swarmreg.digest import Digest
from swarmreg.errors import DIGEST_INVALID, MANIFEST_INVALID, SwarmregError
from swarmreg.oci import manifest as manifest_module
from swarmreg.oci import mediatypes as mt
from swarmreg.oci.descriptor import Platform
from swarmreg.oci.manifest import MAX_MANIFEST_SIZE, Manifest, parse_manifest
from tests.oci import fixtures as fx
from tests.oci.fixtures import dump, load, sha


def refused(body: bytes, content_type: str | None = None) -> SwarmregError:
    with pytest.raises(SwarmregError) as info:
        parse_manifest(body, content_type)
    return info.value


# -- real-shaped manifests ---------------------------------------------------------------------

def test_docker_schema2_image():
    manifest = parse_manifest(fx.DOCKER_IMAGE, mt.DOCKER_MANIFEST)
    assert manifest.media_type == mt.DOCKER_MANIFEST
    assert manifest.digest == Digest(hashlib.sha256(fx.DOCKER_IMAGE).hexdigest())
    assert manifest.size == len(fx.DOCKER_IMAGE)
    assert manifest.blobs == tuple(map(Digest.parse, [fx.DOCKER_CONFIG, fx.DOCKER_LAYER_1,
                                                      fx.DOCKER_LAYER_2]))
    assert manifest.children == ()
    assert manifest.subject is None
    assert manifest.artifact_type == mt.DOCKER_CONFIG  # the referrers rule: config.mediaType
    assert manifest.annotations == {}
    assert manifest.config.media_type == mt.DOCKER_CONFIG and manifest.config.size == 1472
    assert [layer.size for layer in manifest.layers] == [2818413, 93]
    assert not manifest.is_index


def test_oci_artifact_with_subject_and_artifact_type():
    manifest = parse_manifest(fx.OCI_ARTIFACT, mt.OCI_MANIFEST)
    assert manifest.media_type == mt.OCI_MANIFEST
    assert manifest.blobs == (Digest.parse(fx.EMPTY_CONFIG), Digest.parse(fx.SBOM_LAYER))
    assert manifest.subject == Digest.parse(fx.SUBJECT)
    assert manifest.artifact_type == "application/vnd.example.sbom.v1"
    assert manifest.annotations == {"org.opencontainers.image.created": "2024-03-01T12:00:00Z",
                                    "org.example.sbom.format": "spdx"}
    assert manifest.layers[0].annotations == {"org.opencontainers.image.title": "sbom.spdx.json"}
    assert manifest.config.media_type == mt.OCI_EMPTY


def test_oci_image_artifact_type_is_its_config_media_type():
    manifest = parse_manifest(fx.OCI_IMAGE, mt.OCI_MANIFEST)
    assert manifest.artifact_type == mt.OCI_CONFIG
    assert manifest.subject is None
    assert manifest.blobs == (Digest.parse(fx.OCI_CONFIG), Digest.parse(fx.OCI_LAYER))


def test_artifact_without_artifact_type_reports_the_empty_config_type():
    # The distribution spec's rule has no exception for the empty config.
    document = load(fx.OCI_ARTIFACT)
    del document["artifactType"]
    assert parse_manifest(dump(document), None).artifact_type == mt.OCI_EMPTY
    document["artifactType"] = ""  # "empty or missing"
    assert parse_manifest(dump(document), None).artifact_type == mt.OCI_EMPTY


def test_oci_index_with_two_platforms():
    manifest = parse_manifest(fx.OCI_INDEX, mt.OCI_INDEX)
    assert manifest.is_index
    assert manifest.blobs == ()
    assert manifest.children == (Digest.parse(fx.AMD64), Digest.parse(fx.ARM64))
    assert manifest.subject is None
    assert manifest.artifact_type is None
    assert manifest.annotations == {"org.opencontainers.image.ref.name": "1.0"}
    assert [entry.platform for entry in manifest.manifests] == [
        Platform("amd64", "linux"), Platform("arm64", "linux", variant="v8")]
    assert [str(entry.platform) for entry in manifest.manifests] == ["linux/amd64", "linux/arm64/v8"]
    assert manifest.config is None and manifest.layers == ()


def test_oci_index_with_subject_and_artifact_type():
    document = load(fx.OCI_INDEX)
    document["artifactType"] = "application/vnd.example.bundle.v1"
    document["subject"] = {"mediaType": mt.OCI_MANIFEST, "digest": fx.SUBJECT, "size": 99}
    manifest = parse_manifest(dump(document), mt.OCI_INDEX)
    assert manifest.artifact_type == "application/vnd.example.bundle.v1"
    assert manifest.subject == Digest.parse(fx.SUBJECT)


def test_docker_manifest_list():
    manifest = parse_manifest(fx.DOCKER_LIST, mt.DOCKER_MANIFEST_LIST)
    assert manifest.media_type == mt.DOCKER_MANIFEST_LIST and manifest.is_index
    assert manifest.children == tuple(map(Digest.parse, [fx.LIST_AMD64, fx.LIST_ARMV7,
                                                         fx.LIST_WINDOWS]))
    assert manifest.blobs == () and manifest.artifact_type is None
    windows = manifest.manifests[2].platform
    assert windows == Platform("amd64", "windows", os_version="10.0.17763.5329",
                               os_features=("win32k",))
    assert str(manifest.manifests[1].platform) == "linux/arm/v7"


def test_docker_formats_ignore_oci_only_fields():
    # Docker's schemas have no subject/artifactType/annotations; distribution ignores them.
    document = load(fx.DOCKER_IMAGE)
    document["subject"] = "not even a descriptor"
    document["artifactType"] = 7
    document["annotations"] = ["ignored"]
    manifest = parse_manifest(dump(document), mt.DOCKER_MANIFEST)
    assert manifest.subject is None and manifest.annotations == {}
    assert manifest.artifact_type == mt.DOCKER_CONFIG


def test_manifest_is_frozen():
    manifest = parse_manifest(fx.OCI_ARTIFACT, None)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        manifest.digest = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.annotations["x"] = "y"  # type: ignore[index]
    assert isinstance(manifest, Manifest)


def test_digest_and_size_are_of_the_exact_bytes():
    body = b"  \n" + fx.OCI_IMAGE + b"\n\t "
    manifest = parse_manifest(body, mt.OCI_MANIFEST)
    assert manifest.digest == Digest.of(body) != Digest.of(fx.OCI_IMAGE)
    assert manifest.size == len(body)


def test_repeated_layers_are_listed_once():
    document = load(fx.OCI_IMAGE)
    layer = document["layers"][0]
    document["layers"] = [layer, {**layer, "digest": fx.OCI_CONFIG}, layer]
    manifest = parse_manifest(dump(document), None)
    assert manifest.blobs == (Digest.parse(fx.OCI_CONFIG), Digest.parse(fx.OCI_LAYER))
    assert len(manifest.layers) == 3


def test_foreign_layers_with_urls_need_not_be_held():
    document = load(fx.DOCKER_IMAGE)
    foreign = {"mediaType": mt.DOCKER_FOREIGN_LAYER, "size": 5, "digest": sha("7"),
               "urls": ["https://mcr.microsoft.com/v2/windows/blobs/" + sha("7")]}
    local_foreign = {"mediaType": mt.DOCKER_FOREIGN_LAYER, "size": 5, "digest": sha("8")}
    document["layers"] = [foreign, local_foreign]
    manifest = parse_manifest(dump(document), mt.DOCKER_MANIFEST)
    assert manifest.blobs == (Digest.parse(fx.DOCKER_CONFIG), Digest.parse(sha("8")))
    assert manifest.layers[0].external and not manifest.layers[1].external


def test_oci_nondistributable_layer_with_urls_need_not_be_held():
    document = load(fx.OCI_IMAGE)
    document["layers"] = [{"mediaType": mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, "size": 1,
                           "digest": sha("7"), "urls": ["http://example.com/layer"]}]
    assert parse_manifest(dump(document), None).blobs == (Digest.parse(fx.OCI_CONFIG),)


def test_ordinary_layers_with_urls_must_still_be_held():
    document = load(fx.OCI_IMAGE)
    document["layers"][0]["urls"] = ["https://example.com/layer"]
    assert Digest.parse(fx.OCI_LAYER) in parse_manifest(dump(document), None).blobs


@pytest.mark.parametrize("layers", [None, "absent", []])
def test_null_absent_or_empty_layers_are_no_layers(layers):
    # Go encoders write nil slices as null.
    document = load(fx.OCI_ARTIFACT)
    if layers == "absent":
        del document["layers"]
    else:
        document["layers"] = layers
    manifest = parse_manifest(dump(document), mt.OCI_MANIFEST)
    assert manifest.layers == () and manifest.blobs == (Digest.parse(fx.EMPTY_CONFIG),)


@pytest.mark.parametrize("manifests", [None, []])
def test_empty_index(manifests):
    body = dump({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests})
    manifest = parse_manifest(body, mt.OCI_INDEX)
    assert manifest.children == () and manifest.manifests == ()


def test_manifest_of_exactly_the_limit_is_accepted():
    body = fx.OCI_IMAGE + b" " * (MAX_MANIFEST_SIZE - len(fx.OCI_IMAGE))
    assert len(body) == MAX_MANIFEST_SIZE
    assert parse_manifest(body, mt.OCI_MANIFEST).size == MAX_MANIFEST_SIZE


# -- every media type, and how the type is decided --------------------------------------------

FIXTURE_OF = {mt.DOCKER_MANIFEST: fx.DOCKER_IMAGE, mt.DOCKER_MANIFEST_LIST: fx.DOCKER_LIST,
              mt.OCI_MANIFEST: fx.OCI_IMAGE, mt.OCI_INDEX: fx.OCI_INDEX}


def test_the_media_type_sets():
    assert mt.IMAGE_MANIFESTS == {mt.DOCKER_MANIFEST, mt.OCI_MANIFEST}
    assert mt.INDEX_MANIFESTS == {mt.DOCKER_MANIFEST_LIST, mt.OCI_INDEX}
    assert mt.MANIFEST_TYPES == set(FIXTURE_OF)
    assert not mt.SCHEMA1_MANIFESTS & mt.MANIFEST_TYPES


@pytest.mark.parametrize("media_type", sorted(FIXTURE_OF))
@pytest.mark.parametrize("header", ["exact", "parameters", "uppercase", "none", "generic"])
def test_every_media_type_parses(media_type, header):
    content_type = {"exact": media_type, "parameters": f"{media_type}; charset=utf-8",
                    "uppercase": media_type.upper(), "none": None,
                    "generic": "application/octet-stream"}[header]
    manifest = parse_manifest(FIXTURE_OF[media_type], content_type)
    assert manifest.media_type == media_type
    assert manifest.is_index == (media_type in mt.INDEX_MANIFESTS)


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.OCI_INDEX])
def test_oci_body_without_media_type_takes_the_header(media_type):
    document = load(FIXTURE_OF[media_type])
    del document["mediaType"]
    assert parse_manifest(dump(document), media_type).media_type == media_type


@pytest.mark.parametrize("content_type", [
    None, "", "application/octet-stream", "application/json", "application/json; charset=utf-8",
    "text/plain", "application/x-www-form-urlencoded",
])
@pytest.mark.parametrize(("fixture", "inferred"), [
    (fx.OCI_IMAGE, mt.OCI_MANIFEST), (fx.OCI_INDEX, mt.OCI_INDEX), (fx.OCI_ARTIFACT, mt.OCI_MANIFEST),
])
def test_type_is_inferred_from_the_shape_without_any_media_type(content_type, fixture, inferred):
    document = load(fixture)
    del document["mediaType"]
    assert parse_manifest(dump(document), content_type).media_type == inferred


def test_layers_alone_make_an_image_manifest_for_inference():
    # ...and then config is still required.
    error = refused(dump({"schemaVersion": 2, "layers": []}))
    assert error.code is MANIFEST_INVALID and error.detail["field"] == "config"


def test_empty_body_media_type_counts_as_absent():
    document = load(fx.OCI_INDEX)
    document["mediaType"] = ""
    assert parse_manifest(dump(document), None).media_type == mt.OCI_INDEX


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "body_type"), [
    (mt.OCI_MANIFEST, mt.OCI_INDEX),
    (mt.OCI_INDEX, mt.OCI_MANIFEST),
    (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST),
    (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST),
    (mt.DOCKER_MANIFEST_LIST, mt.OCI_INDEX),
])
def test_content_type_and_media_type_must_agree(header, body_type):
    document = load(fx.OCI_IMAGE if body_type in mt.IMAGE_MANIFESTS else fx.OCI_INDEX)
    document["mediaType"] = body_type
    error = refused(dump(document), header)
    assert error.code is MANIFEST_INVALID and error.status == 400
    assert error.detail == {"contentType": header, "mediaType": body_type}


@pytest.mark.parametrize("media_type", [mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])
def test_docker_manifests_need_their_media_type_field(media_type):
    document = load(FIXTURE_OF[media_type])
    del document["mediaType"]
    error = refused(dump(document), media_type)
    assert error.code is MANIFEST_INVALID and error.detail["field"] == "mediaType"


@pytest.mark.parametrize("content_type", [mt.DOCKER_SCHEMA1_MANIFEST,
                                          mt.DOCKER_SCHEMA1_SIGNED_MANIFEST])
def test_schema1_content_types_are_refused(content_type):
    error = refused(fx.DOCKER_IMAGE, content_type)
    assert error.code is MANIFEST_INVALID and "schema1" in error.message


SCHEMA1_BODY = dump({
    "schemaVersion": 1, "name": "library/hello", "tag": "latest", "architecture": "amd64",
    "fsLayers": [{"blobSum": sha("a")}], "history": [{"v1Compatibility": "{}"}],
    "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}],
})


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_schema1_bodies_are_refused(content_type):
    error = refused(SCHEMA1_BODY, content_type)
    assert error.code is MANIFEST_INVALID and "schema1" in error.message


def test_schema1_media_type_in_body_is_refused():
    document = load(fx.DOCKER_IMAGE)
    document["mediaType"] = mt.DOCKER_SCHEMA1_MANIFEST
    error = refused(dump(document), None)
    assert "schema1" in error.message


@pytest.mark.parametrize("content_type", [
    "image/png", "application/vnd.oci.artifact.manifest.v1+json", "text/html", "garbage",
    "application/vnd.oci.image.config.v1+json",
])
def test_unsupported_content_types_are_refused(content_type):
    error = refused(fx.OCI_IMAGE, content_type)
    assert error.code is MANIFEST_INVALID and "unsupported" in error.message


def test_unsupported_body_media_type_is_refused():
    document = load(fx.OCI_IMAGE)
    document["mediaType"] = "application/vnd.oci.artifact.manifest.v1+json"
    error = refused(dump(document), None)
    assert error.code is MANIFEST_INVALID and error.detail["field"] == "mediaType"


def test_oversized_manifest_is_refused():
    body = fx.OCI_IMAGE + b" " * (MAX_MANIFEST_SIZE + 1 - len(fx.OCI_IMAGE))
    error = refused(body, mt.OCI_MANIFEST)
    # The spec's answer ("SHOULD respond ... with a response code 413 Payload Too Large"), with
    # its code for an invalid manifest; distribution 2.8 answers 400.
    assert error.code is MANIFEST_INVALID and error.status == 413
    assert error.detail == {"size": MAX_MANIFEST_SIZE + 1, "limit": MAX_MANIFEST_SIZE}


def _with(fixture: bytes, path: tuple, value) -> bytes:
    """``fixture`` with the value at ``path`` replaced (or deleted, for the DELETE marker)."""
    document = load(fixture)
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return dump(document)


DELETE = object()

# (body, content type, expected code, expected field or None)
REFUSALS = {
    "not json": (b"{not json", None, MANIFEST_INVALID, None),
    "empty body": (b"", mt.OCI_MANIFEST, MANIFEST_INVALID, None),
    "not utf-8": (b'{"schemaVersion": 2, "x": "\xff"}', None, MANIFEST_INVALID, None),
    "utf-16": (fx.OCI_IMAGE.decode().encode("utf-16"), None, MANIFEST_INVALID, None),
    "utf-8 bom": (b"\xef\xbb\xbf" + fx.OCI_IMAGE, None, MANIFEST_INVALID, None),
    "array": (b"[]", mt.OCI_MANIFEST, MANIFEST_INVALID, None),
    "string": (b'"manifest"', None, MANIFEST_INVALID, None),
    "null": (b"null", None, MANIFEST_INVALID, None),
    "nan": (b'{"schemaVersion": NaN}', None, MANIFEST_INVALID, None),
    "infinity": (b'{"schemaVersion": 2, "x": -Infinity}', None, MANIFEST_INVALID, None),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, None, MANIFEST_INVALID, None),
    "huge integer": (b'{"schemaVersion": 1' + b"0" * 5000 + b"}", None, MANIFEST_INVALID, None),
    "no schemaVersion": (_with(fx.OCI_IMAGE, ("schemaVersion",), DELETE), None, MANIFEST_INVALID,
                         "schemaVersion"),
    "schemaVersion 3": (_with(fx.OCI_IMAGE, ("schemaVersion",), 3), None, MANIFEST_INVALID,
                        "schemaVersion"),
    "schemaVersion string": (_with(fx.OCI_IMAGE, ("schemaVersion",), "2"), None, MANIFEST_INVALID,
                             "schemaVersion"),
    "schemaVersion float": (_with(fx.OCI_IMAGE, ("schemaVersion",), 2.0), None, MANIFEST_INVALID,
                            "schemaVersion"),
    "schemaVersion true": (_with(fx.OCI_IMAGE, ("schemaVersion",), True), None, MANIFEST_INVALID,
                           "schemaVersion"),
    "mediaType not a string": (_with(fx.OCI_IMAGE, ("mediaType",), 5), None, MANIFEST_INVALID,
                               "mediaType"),
    "no type at all": (b'{"schemaVersion": 2}', None, MANIFEST_INVALID, None),
    "index with config": (_with(fx.OCI_INDEX, ("config",), load(fx.OCI_IMAGE)["config"]),
                          mt.OCI_INDEX, MANIFEST_INVALID, None),
    "index with layers": (_with(fx.OCI_INDEX, ("layers",), []), mt.OCI_INDEX, MANIFEST_INVALID, None),
    "list with layers": (_with(fx.DOCKER_LIST, ("layers",), []), None, MANIFEST_INVALID, None),
    "manifest with manifests": (_with(fx.OCI_IMAGE, ("manifests",), []), mt.OCI_MANIFEST,
                                MANIFEST_INVALID, None),
    "inferred ambiguity": (dump({"schemaVersion": 2, "manifests": [], "config": {}}), None,
                           MANIFEST_INVALID, None),
    "no config": (_with(fx.OCI_IMAGE, ("config",), DELETE), mt.OCI_MANIFEST, MANIFEST_INVALID,
                  "config"),
    "null config": (_with(fx.DOCKER_IMAGE, ("config",), None), None, MANIFEST_INVALID, "config"),
    "config not an object": (_with(fx.OCI_IMAGE, ("config",), "sha256:x"), None, MANIFEST_INVALID,
                             "config"),
    "layers not an array": (_with(fx.OCI_IMAGE, ("layers",), {}), None, MANIFEST_INVALID, "layers"),
    "layer not an object": (_with(fx.OCI_IMAGE, ("layers", 0), fx.OCI_LAYER), None,
                            MANIFEST_INVALID, "layers[0]"),
    "manifests not an array": (_with(fx.OCI_INDEX, ("manifests",), "x"), None, MANIFEST_INVALID,
                               "manifests"),
    "no descriptor mediaType": (_with(fx.OCI_IMAGE, ("layers", 0, "mediaType"), DELETE), None,
                                MANIFEST_INVALID, "layers[0].mediaType"),
    "empty descriptor mediaType": (_with(fx.OCI_IMAGE, ("config", "mediaType"), ""), None,
                                   MANIFEST_INVALID, "config.mediaType"),
    "descriptor mediaType with parameters": (
        _with(fx.OCI_IMAGE, ("config", "mediaType"), "application/json; charset=utf-8"), None,
        MANIFEST_INVALID, "config.mediaType"),
    "descriptor mediaType not a type": (_with(fx.OCI_INDEX, ("manifests", 1, "mediaType"), "json"),
                                        None, MANIFEST_INVALID, "manifests[1].mediaType"),
    "no digest": (_with(fx.OCI_IMAGE, ("config", "digest"), DELETE), None, MANIFEST_INVALID,
                  "config.digest"),
    "digest not a string": (_with(fx.OCI_IMAGE, ("layers", 0, "digest"), 12), None,
                            MANIFEST_INVALID, "layers[0].digest"),
    "malformed digest": (_with(fx.OCI_IMAGE, ("layers", 0, "digest"), "sha256:abc"), None,
                         DIGEST_INVALID, "layers[0].digest"),
    "uppercase digest": (_with(fx.OCI_IMAGE, ("config", "digest"), fx.OCI_CONFIG.upper()), None,
                         DIGEST_INVALID, "config.digest"),
    "sha384 digest": (_with(fx.OCI_IMAGE, ("layers", 0, "digest"), "sha384:" + "a" * 96), None,
                      DIGEST_INVALID, "layers[0].digest"),
    "short sha512 digest": (_with(fx.OCI_IMAGE, ("layers", 0, "digest"), "sha512:" + "a" * 64), None,
                            DIGEST_INVALID, "layers[0].digest"),
    "traversal digest": (_with(fx.OCI_INDEX, ("manifests", 0, "digest"), "sha256:../../etc"), None,
                         DIGEST_INVALID, "manifests[0].digest"),
    "no size": (_with(fx.OCI_IMAGE, ("layers", 0, "size"), DELETE), None, MANIFEST_INVALID,
                "layers[0].size"),
    "negative size": (_with(fx.OCI_IMAGE, ("config", "size"), -1), None, MANIFEST_INVALID,
                      "config.size"),
    "float size": (_with(fx.OCI_IMAGE, ("config", "size"), 1.0), None, MANIFEST_INVALID,
                   "config.size"),
    "string size": (_with(fx.OCI_IMAGE, ("config", "size"), "12"), None, MANIFEST_INVALID,
                    "config.size"),
    "boolean size": (_with(fx.OCI_IMAGE, ("config", "size"), True), None, MANIFEST_INVALID,
                     "config.size"),
    "size beyond int64": (_with(fx.OCI_IMAGE, ("config", "size"), 2**63), None, MANIFEST_INVALID,
                          "config.size"),
    "annotations not an object": (_with(fx.OCI_IMAGE, ("annotations",), ["a"]), None,
                                  MANIFEST_INVALID, "annotations"),
    "annotation not a string": (_with(fx.OCI_IMAGE, ("annotations",), {"a": 1}), None,
                                MANIFEST_INVALID, "annotations"),
    "descriptor annotation not a string": (
        _with(fx.OCI_ARTIFACT, ("layers", 0, "annotations"), {"a": None}), None, MANIFEST_INVALID,
        "layers[0].annotations"),
    "artifactType not a type": (_with(fx.OCI_ARTIFACT, ("artifactType",), "sbom"), None,
                                MANIFEST_INVALID, "artifactType"),
    "artifactType not a string": (_with(fx.OCI_ARTIFACT, ("artifactType",), 1), None,
                                  MANIFEST_INVALID, "artifactType"),
    "subject not an object": (_with(fx.OCI_ARTIFACT, ("subject",), fx.SUBJECT), None,
                              MANIFEST_INVALID, "subject"),
    "subject bad digest": (_with(fx.OCI_ARTIFACT, ("subject", "digest"), "md5:abc"), None,
                           DIGEST_INVALID, "subject.digest"),
    "subject no size": (_with(fx.OCI_ARTIFACT, ("subject", "size"), DELETE), None,
                        MANIFEST_INVALID, "subject.size"),
    "platform without os": (_with(fx.OCI_INDEX, ("manifests", 0, "platform", "os"), DELETE), None,
                            MANIFEST_INVALID, "manifests[0].platform.os"),
    "platform not an object": (_with(fx.DOCKER_LIST, ("manifests", 0, "platform"), "linux/amd64"),
                               None, MANIFEST_INVALID, "manifests[0].platform"),
    "platform variant not a string": (
        _with(fx.OCI_INDEX, ("manifests", 1, "platform", "variant"), 8), None, MANIFEST_INVALID,
        "manifests[1].platform.variant"),
    "os.features not strings": (
        _with(fx.DOCKER_LIST, ("manifests", 2, "platform", "os.features"), [1]), None,
        MANIFEST_INVALID, "manifests[2].platform.os.features"),
    "urls not an array": (_with(fx.OCI_IMAGE, ("layers", 0, "urls"), "https://x"), None,
                          MANIFEST_INVALID, "layers[0].urls"),
    "foreign layer with an ftp url": (
        _with(fx.DOCKER_IMAGE, ("layers", 0), {"mediaType": mt.DOCKER_FOREIGN_LAYER, "size": 1,
                                               "digest": sha("7"), "urls": ["ftp://x/y"]}),
        None, MANIFEST_INVALID, "layers[0].urls[0]"),
    "foreign layer url with a fragment": (
        _with(fx.DOCKER_IMAGE, ("layers", 1), {"mediaType": mt.DOCKER_FOREIGN_LAYER, "size": 1,
                                               "digest": sha("7"), "urls": ["https://x/y#z"]}),
        None, MANIFEST_INVALID, "layers[1].urls[0]"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case):
    body, content_type, code, field = REFUSALS[case]
    error = refused(body, content_type)
    assert error.code is code, error.message
    assert error.status == 400
    if field is not None:
        assert error.detail["field"] == field, error.detail
        assert field in error.message
    assert error.envelope()["errors"][0]["code"] == code.code
    json.dumps(error.envelope())  # the detail is JSON-serialisable


def test_a_manifest_referencing_itself_is_refused(monkeypatch):
    # A sha256 fixpoint cannot be built, so make the hash of the body equal a digest it lists.
    class Rigged(Digest):
        @classmethod
        def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
            return Digest.parse(target)

    monkeypatch.setattr(manifest_module, "Digest", Rigged)
    for body, target in [(fx.OCI_IMAGE, fx.OCI_LAYER), (fx.OCI_IMAGE, fx.OCI_CONFIG),
                         (fx.OCI_INDEX, fx.ARM64), (fx.OCI_ARTIFACT, fx.SUBJECT)]:
        error = refused(body)
        assert error.code is MANIFEST_INVALID and "references itself" in error.message
        assert error.detail == {"digest": target}


# -- sha512 ------------------------------------------------------------------------------------

def test_descriptors_may_name_sha512_digests():
    config, layer = "sha512:" + "c" * 128, "sha512:" + "d" * 128
    document = load(fx.OCI_IMAGE)
    document["config"]["digest"], document["layers"][0]["digest"] = config, layer
    manifest = parse_manifest(dump(document), mt.OCI_MANIFEST)
    assert manifest.blobs[:2] == (Digest.parse(config), Digest.parse(layer))
    assert manifest.digest.algorithm == "sha256", "the canonical digest unless asked for another"


def test_the_manifest_digest_is_taken_with_the_algorithm_asked_for():
    """A manifest put under a sha512 digest is verified with sha512."""
    manifest = parse_manifest(fx.OCI_IMAGE, mt.OCI_MANIFEST, algorithm="sha512")
    assert manifest.digest == Digest(hashlib.sha512(fx.OCI_IMAGE).hexdigest(), "sha512")
    assert manifest.descriptor().digest == manifest.digest
    with pytest.raises(SwarmregError) as info:
        parse_manifest(fx.OCI_IMAGE, mt.OCI_MANIFEST, algorithm="md5")
    assert info.value.code is DIGEST_INVALID


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"schemaVersion": NaN}', b"[" * 100_000 + b"]" * 100_000,
                                  b'{"schemaVersion": 1' + b"0" * 5000 + b"}", b'{"a": 1} trailing'],
                         ids=["not json", "empty", "nan", "deep nesting", "huge integer", "trailing"])
def test_a_refusal_carries_no_decoder_text(body: bytes) -> None:
    """MANIFEST_INVALID says where the JSON breaks in its own words, never the decoder's
    exception text ("Expecting value: line 1 column 1 (char 0)")."""
    decoder_text = "NaN is not JSON"  # (Python decodes NaN; the parser refuses it in its own words)
    try:
        json.loads(body.decode())
    except (ValueError, RecursionError) as error:
        decoder_text = str(error)
    with pytest.raises(SwarmregError) as refused:
        parse_manifest(body, None)
    assert refused.value.code is MANIFEST_INVALID
    envelope = json.dumps(refused.value.envelope())
    assert decoder_text[:20] not in envelope
    for words in ("Expecting", "Exceeds the limit", "recursion", "Extra data", "is not JSON"):
        assert words not in envelope
