"""Compare two runs of the sequence: the reference registry's and a target's.

``compare(reference, target)`` lists every step whose status, recorded headers or normalized
body differ. Features the reference does not implement (a 404 on the feature's probe step, as
docker-registry 2.8 answers the OCI 1.1 referrers API) are not compared: if the target
implements them it is checked against the statuses the spec calls for instead, and if neither
does the steps are only listed by ``reference_gaps``. Where a step listed in
``KNOWN_DIFFERENCES`` (each citing the spec; see docs/conformance.md) differs from the
reference, the target is held to the spec there too (``Step.expect``, ``spec_headers``,
``spec_body``) instead of to the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .runner import Observation
from .sequence import build_sequence
from .steps import Step

# Step name -> the passage of the OCI distribution spec (v1.1, spec.md) that makes the target's
# answer right where it differs from docker-registry. Mirrored in docs/conformance.md,
# "Differences from docker-registry"; an entry without a spec citation does not belong here.
_SPEC = "OCI distribution spec v1.1"
_SINGLE_POST = (f'{_SPEC}, "Single POST": "Registries MAY support pushing blobs using a single POST '
                'request." and "Successful completion of the request MUST return a 201 Created and '
                'MUST include the following header: Location: <blob-location>" (docker-registry '
                'takes the other allowed branch, 202 and an upload)')
_FALLBACK_PUT = (f'{_SPEC}, "Single POST": a client PUTs only after a 202 ("clients SHOULD proceed '
                 'with a subsequent PUT request"); a registry that stored the blob with 201 opened '
                 'no upload, so the step is skipped')
_LEXICAL = (f'{_SPEC}, "Listing Tags": "If the list is not empty, the tags MUST be in lexical '
            'order" (docker-registry lists them in storage order)')
_PAGE = (f'{_SPEC}, "Listing Tags": "the response MUST include <int> results" unless fewer exist or '
         'a Link header is provided, and with last "up to <int> tags *after* <tagname> will be '
         'returned" in lexical order (docker-registry 2.8 ignores n and last)')
_SHA512 = ('OCI image spec v1.1, descriptor.md "Registered algorithms": sha512 is registered beside '
           'sha256 ("When the algorithm identifier is sha512, the encoded portion MUST match '
           '/[a-f0-9]{128}/"), and a digest names content by the algorithm it gives; ' + _SPEC + ', '
           '"Pulling blobs": the Docker-Content-Digest header is the digest of the blob "<digest>" '
           'pulled (docker-registry 2.8 keeps every blob under its sha256 only and answers that digest)')
_SHA512_MANIFEST = (_SPEC + ', "Pushing Manifests": the <reference> of PUT /v2/<name>/manifests/<reference> '
                    'may be a digest, and a digest may be a sha512 one (image spec, "Registered algorithms"); '
                    'the manifest is then pullable by that digest (docker-registry 2.8 refuses it: 400 '
                    'DIGEST_INVALID, and so has nothing to answer with at the GET and HEAD: 404)')
KNOWN_DIFFERENCES: Mapping[str, str] = {
    "errors.upload-status-unknown-id": (
        f'{_SPEC}, "Error Codes": code-3 BLOB_UPLOAD_UNKNOWN is "blob upload unknown to registry", '
        'the condition here (an upload id never issued); docker-registry answers code-2 '
        'BLOB_UPLOAD_INVALID, "blob upload invalid"'),
    "push.monolithic-post": _SINGLE_POST,
    "push.monolithic-post.fallback-put": _FALLBACK_PUT,
    "push.monolithic-post-arm64": _SINGLE_POST,
    "push.monolithic-post-arm64.fallback-put": _FALLBACK_PUT,
    "push.monolithic-post-empty-blob": _SINGLE_POST,
    "push.monolithic-post-empty-blob.fallback-put": _FALLBACK_PUT,
    "sha512.monolithic-post": f"{_SINGLE_POST}; {_SHA512}",
    "sha512.monolithic-post.fallback-put": _FALLBACK_PUT,
    "sha512.post-put.put": _SHA512,
    "sha512.chunked.put-last-chunk": _SHA512,
    "sha512.blob-head": _SHA512,
    "sha512.blob-get": _SHA512,
    "sha512.blob-get-chunked-upload": _SHA512,
    "sha512.blob-range": _SHA512,
    "sha512.blob-under-sha256-unknown": (
        f'{_SPEC}, "Pulling blobs": "If the blob is not found in the repository, the registry MUST return '
        'a 404"; a blob pushed under its sha512 digest is in the repository under that digest (docker-registry '
        '2.8 keeps it under its sha256 and serves it there: 200)'),
    "sha512.manifest-by-digest": _SHA512_MANIFEST,
    "sha512.manifest-get-by-digest": _SHA512_MANIFEST,
    "sha512.manifest-head-by-digest": _SHA512_MANIFEST,
    "push.out-of-order.patch-gap": (
        f'{_SPEC}, "Pushing a blob in chunks": "Chunks MUST be uploaded in order, with the first byte '
        'of a chunk being the last chunk\'s <end-of-range> plus one. If a chunk is uploaded out of '
        'order, the registry MUST respond with a 416 Requested Range Not Satisfiable code." '
        '(docker-registry ignores Content-Range and appends the chunk: 202)'),
    "push.bad-range.patch-length": (
        f'{_SPEC}, "Pushing a blob in chunks": the Content-Range of a chunk is "<range-start>-<range-end>" '
        'of the bytes it carries, and "If a chunk is uploaded out of order, the registry MUST respond with a '
        '416"; a chunk whose body is longer than its range puts its last bytes out of order (docker-registry '
        'ignores Content-Range and appends all three bytes: 202)'),
    "push.bad-range.patch-1": (
        f'{_SPEC}, "Pushing a blob in chunks": the upload holds what the accepted chunks carried '
        '(docker-registry kept the three bytes of the refused chunk before them)'),
    "push.bad-range.put-gap": (
        f'{_SPEC}, "Pushing a blob in chunks": the closing PUT "MAY include ... the final chunk", '
        'a chunk like any other: "If a chunk is uploaded out of order, the registry MUST respond with a 416" '
        '(docker-registry appends it and then fails the digest: 400)'),
    "push.bad-range.cancel": (
        f'{_SPEC}, "Deleting an upload": the upload refused with 416 is still open, and DELETE ends it: 204 '
        '(docker-registry ended it at the failed PUT: 404)'),
    "pull.blob-range-unsatisfiable": (
        f'{_SPEC}, "Pulling blobs": "A registry SHOULD support the Range request header in '
        'accordance with RFC 9110" (both answer 416 with Content-Range: bytes */<size>); "Error '
        'Codes": "If the response body is in JSON format, it MUST have the following format" (our '
        'body; docker-registry\'s text/plain body is shorter than its Content-Length), and '
        '"Legacy Docker support HTTP headers": Docker-Content-Digest is OPTIONAL'),
    "push.manifest-over-4mib": (
        f'{_SPEC}, "Pushing Manifests": "A registry that enforces this limit SHOULD respond to a '
        'request to push a manifest over this limit with a response code 413 Payload Too Large." '
        '(docker-registry answers 400; both use MANIFEST_INVALID)'),
    "discovery.tags": _LEXICAL,
    "discovery.tags-n2": _PAGE,
    "discovery.tags-n2-last": _PAGE,
    "discovery.tags-last-page": _PAGE,
    "discovery.tags-last-only": (
        f'{_SPEC}, "Listing Tags": "When using the last query parameter, the n parameter is '
        'OPTIONAL." and "<tagname> will not be included in the results" (docker-registry 2.8 '
        'ignores last)'),
    "discovery.tags-n0": (
        f'{_SPEC}, "Listing Tags": "When n is zero, this endpoint MUST return an empty list, and '
        'MUST NOT include a Link header." (docker-registry 2.8 lists every tag)'),
    "management.delete-tag": (
        f'{_SPEC}, "Deleting tags": "Upon success, the registry MUST respond with a 202 Accepted '
        'code. If tag deletion is disabled, the registry MUST respond with either a 400 Bad Request '
        'or a 405 Method Not Allowed." (we delete tags; docker-registry does not: 400)'),
    "management.deleted-tag-gone": (
        f'{_SPEC}, "Deleting tags": "Once deleted, a GET to /v2/<name>/manifests/<tag> will return '
        'a 404." (docker-registry kept the tag)'),
    "management.tags-after-deletes": (
        f'{_SPEC}, "Deleting tags" (the deleted tag is gone) and "Listing Tags": "the tags MUST be '
        'in lexical order"'),
}


@attrs.frozen
class Difference:
    step: str
    field: str  # "status", "header <name>", "body", "spec status", "spec header <name>", "spec body"
    reference: Any
    target: Any

    def __str__(self) -> str:
        return f"{self.step}: {self.field}: reference {self.reference!r}, target {self.target!r}"


def unimplemented_features(observations: Sequence[Observation],
                           steps: Sequence[Step] | None = None) -> set[str]:
    """Optional features whose probe step answered 404 (a registry implementing them must not)."""
    by_name = {step.name: step for step in steps or build_sequence()}
    return {by_name[o.step].feature for o in observations
            if by_name[o.step].probe and by_name[o.step].feature and o.status == 404}


def reference_gaps(reference: Sequence[Observation], target: Sequence[Observation],
                   steps: Sequence[Step] | None = None) -> list[str]:
    """Steps left uncompared because neither side implements their feature."""
    steps = steps or build_sequence()
    both = unimplemented_features(reference, steps) & unimplemented_features(target, steps)
    return [step.name for step in steps if step.feature in both]


def _field_differences(a: Observation, b: Observation) -> list[Difference]:
    found = []
    if a.status != b.status:
        found.append(Difference(a.step, "status", a.status, b.status))
    for name in sorted(set(a.headers) | set(b.headers)):
        if a.headers.get(name) != b.headers.get(name):
            found.append(Difference(a.step, f"header {name}", a.headers.get(name),
                                    b.headers.get(name)))
    if a.body != b.body:
        found.append(Difference(a.step, "body", a.body, b.body))
    return found


def spec_differences(step: Step, observed: Observation) -> list[Difference]:
    """Where the target's answer is not what the spec requires: its status (unless the step was
    skipped: its upload was never opened, which the opening step answers for), the required
    headers (None: must be absent) and body."""
    found = []
    if observed.status != 0 and observed.status not in step.expected:
        found.append(Difference(step.name, "spec status", step.expected, observed.status))
    for name, value in step.spec_headers.items():
        if observed.headers.get(name) != value:
            found.append(Difference(step.name, f"spec header {name}", value, observed.headers.get(name)))
    if step.spec_body is not None and observed.body != step.spec_body:
        found.append(Difference(step.name, "spec body", step.spec_body, observed.body))
    return found


def compare(reference: Sequence[Observation], target: Sequence[Observation],
            steps: Sequence[Step] | None = None,
            known: Mapping[str, str] = KNOWN_DIFFERENCES) -> list[Difference]:
    """Every difference between the two runs, in sequence order (see the module docstring)."""
    steps = steps or build_sequence()
    by_ref = {o.step: o for o in reference}
    by_target = {o.step: o for o in target}
    missing_ref = unimplemented_features(reference, steps)
    missing_target = unimplemented_features(target, steps)
    found: list[Difference] = []
    for step in steps:
        a, b = by_ref.get(step.name), by_target.get(step.name)
        if a is None or b is None:
            found.append(Difference(step.name, "observation", a is not None, b is not None))
        elif step.feature in missing_ref:
            if step.feature not in missing_target:
                found.extend(spec_differences(step, b))
        elif (differences := _field_differences(a, b)) and step.name in known:
            # A known difference: the target may answer otherwise than the reference, as long as
            # its answer is the spec's.
            found.extend(spec_differences(step, b))
        else:
            found.extend(differences)
    return found


def spec_departures(observations: Sequence[Observation],
                    steps: Sequence[Step] | None = None) -> list[Difference]:
    """Steps whose status is not one the spec calls for (informative: for the documentation)."""
    by_name = {step.name: step for step in steps or build_sequence()}
    return [Difference(o.step, "spec status", by_name[o.step].expected, o.status)
            for o in observations if o.status not in by_name[o.step].expected]


def report(differences: Sequence[Difference]) -> str:
    return "\n".join(str(d) for d in differences) or "no differences"
