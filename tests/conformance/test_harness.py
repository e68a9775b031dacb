"""The harness itself, without a registry: the sequence is well formed, normalization and
comparison treat equivalent answers alike and tell different ones apart."""

from __future__ import annotations

import json

import httpx

from .compare import KNOWN_DIFFERENCES, compare, reference_gaps, spec_departures
from .content import MANIFEST_LIMIT, Content, digest
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
                    observation("discovery.tags", body={"tags": ["b", "a"]}))
    found = {(d.step, d.field) for d in compare(reference, target)}
    assert found == {("base.v2", "status"), ("pull.blob-head", "header content-length"),
                     ("discovery.tags", "body")}


def test_features_the_reference_lacks_are_checked_against_the_spec() -> None:
    reference = run_of()
    assert compare(reference, run_of()) == []
    assert "referrers.list" in reference_gaps(reference, run_of())
    # A target that implements referrers: each step is held to the spec's status.
    implementing = run_of(observation("referrers.none-yet", 200),
                          observation("referrers.push-sbom", 201),
                          observation("referrers.push-signature", 500))
    found = compare(reference, implementing)
    assert [(d.step, d.target) for d in found] == [("referrers.push-signature", 500)]
    assert reference_gaps(reference, implementing) == []


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
