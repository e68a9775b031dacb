"""The harness itself, without a registry: the sequence is well formed, normalization and
comparison treat equivalent answers alike and tell different ones apart."""

from __future__ import annotations

import json

import attrs
import httpx

from .compare import KNOWN_DIFFERENCES, compare, reference_gaps, spec_departures
from .content import MANIFEST_LIMIT, Content, digest, digest512
from .normalize import normalize_body, normalize_headers, normalize_link, normalize_location
from .runner import Observation, _pieces
from .sequence import build_sequence

BASE = "http://127.0.0.1:5000"
KNOWN = Content().known_digests()


def test_sequence_is_well_formed() -> None:
    steps = build_sequence()
    saved: set[str] = set()
    for step in steps:
        if step.saved_url is not None:
            assert step.saved_url in saved, f"{step.name} uses ${step.saved_url} before it is saved"
        if step.save:
            saved.add(step.save)
    workflows = {step.workflow for step in steps}
    assert workflows == {"base", "errors", "push", "pull", "discovery", "management"}
    assert any(step.stream for step in steps)
    assert {s.feature for s in steps if s.probe} == {s.feature for s in steps} - {None}


def test_content_is_fixed() -> None:
    a, b = Content(), Content()
    assert a.known_digests() == b.known_digests()
    assert len(a.at_limit) == MANIFEST_LIMIT < len(a.over_limit)
    assert digest(a.sbom) != digest(a.signature)


def test_locations_compare_equal_absolute_or_relative() -> None:
    upload_a = f"{BASE}/v2/x/blobs/uploads/1234?_state=abc"
    upload_b = "/v2/x/blobs/uploads/5a8e1b2c-0000-4000-8000-000000000000"
    assert normalize_location(upload_a, BASE, KNOWN) == normalize_location(upload_b, BASE, KNOWN)
    assert normalize_location("http://elsewhere:1/v2/x/blobs/uploads/1", BASE, KNOWN) != \
        normalize_location(upload_b, BASE, KNOWN)
    blob = f"/v2/x/blobs/{digest(Content.config)}"
    assert normalize_location(BASE + blob, BASE, KNOWN) == blob
    assert normalize_location(f"/v2/x/blobs/sha256:{'1' * 64}", BASE, KNOWN) == \
        "/v2/x/blobs/sha256:<unknown>"


def test_sha512_digests_are_kept_when_known_and_masked_otherwise() -> None:
    known = f"/v2/x/blobs/{digest512(Content.layer_sha512_put)}"
    assert normalize_location(known, BASE, KNOWN) == known
    assert normalize_location(f"/v2/x/blobs/sha512:{'1' * 128}", BASE, KNOWN) == "/v2/x/blobs/sha512:<unknown>"
    # A sha256 prefix of a sha512 hex is not a sha256 digest.
    assert normalize_location(f"/v2/x/blobs/sha256:{'1' * 128}", BASE, KNOWN) == f"/v2/x/blobs/sha256:{'1' * 128}"
    sha512_steps = [step for step in build_sequence() if step.name.startswith("sha512.")]
    assert {"push", "pull"} <= {step.workflow for step in sha512_steps}
    assert any("sha512:" in str(step.params.get("digest", "")) and "Content-Range" in step.headers
               for step in sha512_steps), "a chunked upload under a sha512 digest"


def test_link_query_order_does_not_matter() -> None:
    a = normalize_link('</v2/x/tags/list?n=2&last=b>; rel="next"', BASE, KNOWN)
    b = normalize_link(f'<{BASE}/v2/x/tags/list?last=b&n=2>; rel=next', BASE, KNOWN)
    assert a == b == "</v2/x/tags/list?last=b&n=2>; rel=next"
    assert normalize_link('</v2/x/tags/list?n=2&last=c>; rel="next"', BASE, KNOWN) != a


def test_error_envelopes_compare_by_codes() -> None:
    first = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
    second = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "other", "detail": {}}]})
    other = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "blob unknown"}]})
    forms = [normalize_body("GET", 404, body.encode(), False, KNOWN) for body in (first, second, other)]
    assert forms[0] == forms[1] == {"errors": ["BLOB_UNKNOWN"]} != forms[2]


def test_content_bodies_compare_by_digest_and_json_by_value() -> None:
    assert normalize_body("GET", 200, b"abc", True, KNOWN) == {
        "sha256": digest(b"abc").removeprefix("sha256:"), "length": 3}
    assert normalize_body("GET", 200, b'{"tags": ["a"],  "name": "x"}\n', False, KNOWN) == \
        normalize_body("GET", 200, b'{"name":"x","tags":["a"]}', False, KNOWN)
    assert normalize_body("HEAD", 200, b"", True, KNOWN) is None


def test_headers_kept_and_dropped() -> None:
    headers = httpx.Headers({"Content-Type": "application/json; charset=utf-8",
                             "Content-Length": "88", "Docker-Upload-UUID": "abc",
                             "Range": "0-99", "Date": "now"})
    error = normalize_headers("GET", 404, headers, {"errors": ["X"]}, False, BASE, KNOWN)
    assert error == {"content-type": "application/json", "docker-upload-uuid": "present",
                     "range": "0-99"}
    head = normalize_headers("HEAD", 200, headers, None, True, BASE, KNOWN)
    assert head["content-length"] == "88"
    empty = normalize_headers("PUT", 201, headers, None, False, BASE, KNOWN)
    assert "content-type" not in empty and "content-length" not in empty


def observation(step: str, status: int = 200, headers: dict[str, str] | None = None,
                body: object = None) -> Observation:
    return Observation(step, status, headers or {}, body, {})


def run_of(*overrides: Observation) -> list[Observation]:
    """One observation per step: 200 everywhere, 404 for the referrers probe, unless overridden."""
    replaced = {o.step: o for o in overrides}
    return [replaced.get(s.name, observation(s.name, 404 if s.probe else 200))
            for s in build_sequence()]


def test_compare_finds_each_kind_of_difference() -> None:
    reference = run_of()
    assert compare(reference, run_of()) == []
    target = run_of(observation("base.v2", 401),
                    observation("pull.blob-head", headers={"content-length": "1"}),
                    observation("discovery.catalog", body={"repositories": ["b", "a"]}))
    found = {(d.step, d.field) for d in compare(reference, target)}
    assert found == {("base.v2", "status"), ("pull.blob-head", "header content-length"),
                     ("discovery.catalog", "body")}


def spec_answer(step_name: str, status: int | None = None, **changes: object) -> Observation:
    """The answer the spec calls for at a step: its first expected status, required headers, body."""
    [step] = [s for s in build_sequence() if s.name == step_name]
    headers = {k: v for k, v in step.spec_headers.items() if v is not None}
    return attrs.evolve(observation(step.name, status or step.expected[0], headers, step.spec_body),
                        **changes)


def test_known_differences_are_held_to_the_spec() -> None:
    reference = run_of()
    # Answering otherwise than the reference is fine where the answer is the spec's ...
    spec_like = run_of(spec_answer("discovery.tags-n0"), spec_answer("management.delete-tag", 202),
                       observation("push.monolithic-post.fallback-put", 0, body={"skipped": "x"}))
    assert compare(reference, spec_like) == []
    # ... and reported where it is not.
    wrong = run_of(spec_answer("discovery.tags-n0", headers={"link": "</v2/x>; rel=next"}),
                   observation("management.delete-tag", 500))
    found = {(d.step, d.field) for d in compare(reference, wrong)}
    assert found == {("discovery.tags-n0", "spec header link"), ("management.delete-tag", "spec status")}
    wrong_body = run_of(spec_answer("discovery.tags-n0", body={"name": "conformance/app", "tags": ["a"]}))
    assert [(d.step, d.field) for d in compare(reference, wrong_body)] == [("discovery.tags-n0", "spec body")]


def test_features_the_reference_lacks_are_checked_against_the_spec() -> None:
    reference = run_of()
    assert compare(reference, run_of()) == []
    assert "referrers.list" in reference_gaps(reference, run_of())
    # A target that implements referrers: each step is held to the spec's status, headers, body.
    referrers = [s.name for s in build_sequence() if s.feature == "referrers"]
    implementing = run_of(*(spec_answer(name) for name in referrers))
    assert compare(reference, implementing) == []
    assert reference_gaps(reference, implementing) == []
    broken = run_of(*(spec_answer(name) for name in referrers),
                    spec_answer("referrers.push-signature", 500),
                    spec_answer("referrers.push-sbom", headers={}),
                    spec_answer("referrers.filter-artifact-type",
                                headers={"content-type": "application/vnd.oci.image.index.v1+json"}),
                    spec_answer("referrers.unknown-subject", body={"errors": ["MANIFEST_UNKNOWN"]}))
    found = [(d.step, d.field) for d in compare(reference, broken)]
    assert found == [("referrers.push-sbom", "spec header oci-subject"),
                     ("referrers.push-signature", "spec status"),
                     ("referrers.filter-artifact-type", "spec header oci-filters-applied"),
                     ("referrers.unknown-subject", "spec body")]


def test_known_differences_name_steps_and_cite_the_spec() -> None:
    names = {step.name for step in build_sequence()}
    for step, citation in KNOWN_DIFFERENCES.items():
        assert step in names
        assert "spec" in citation.lower()


def test_spec_departures_are_listed() -> None:
    departures = spec_departures(run_of(observation("base.v2", 404)))
    assert [d.step for d in departures if d.step == "base.v2"] == ["base.v2"]


def test_streamed_steps_use_chunked_transfer_encoding() -> None:
    [step] = [s for s in build_sequence() if s.stream]
    request = httpx.AsyncClient().build_request("PATCH", BASE, content=_pieces(step.body or b""))
    assert request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in request.headers and "content-range" not in step.headers
