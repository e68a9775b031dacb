"""The differential conformance test: every target answers the sequence as docker-registry does.

Both runs are saved as JSON in the test's tmp_path (reference.json, <target>.json) for reading.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .compare import compare, reference_gaps, report, spec_departures, unimplemented_features
from .conftest import Target
from .content import Content
from .runner import run_sequence, write_observations
from .sequence import build_sequence


async def test_target_answers_like_the_reference(conformance_reference: str,
                                                 conformance_target: Target, tmp_path: Path,
                                                 record_property: pytest.RecordProperty) -> None:
    content = Content()
    steps, known = build_sequence(content), content.known_digests()
    reference = await run_sequence(conformance_reference, steps, known)
    target = await run_sequence(conformance_target.url, steps, known)
    write_observations(tmp_path / "reference.json", reference)
    write_observations(tmp_path / f"{conformance_target.name}.json", target)

    # Every step got an HTTP answer from the reference (a broken connection is not a baseline).
    assert all(o.status > 0 for o in reference), [o.step for o in reference if o.status <= 0]
    record_property("reference_gaps", reference_gaps(reference, target, steps))
    record_property("reference_spec_departures", [str(d) for d in spec_departures(reference, steps)])
    differences = compare(reference, target, steps)
    assert not differences, report(differences)


async def test_reference_lacks_only_the_referrers_api(conformance_reference: str) -> None:
    """docker-registry 2.8 predates OCI 1.1: the harness sees the referrers API as missing."""
    content = Content()
    steps = build_sequence(content)
    reference = await run_sequence(conformance_reference, steps, content.known_digests())
    assert unimplemented_features(reference, steps) == {"referrers"}
    by_name = {o.step: o for o in reference}
    assert by_name["referrers.list"].status == 404
    # Manifests with a subject are stored, without the OCI-Subject header of OCI 1.1 registries.
    assert by_name["referrers.push-sbom"].status == 201
    assert "oci-subject" not in by_name["referrers.push-sbom"].headers
