"""Compare two runs of the sequence: the reference registry's and a target's.

``compare(reference, target)`` lists every step whose status, recorded headers or normalized
body differ. Features the reference does not implement (a 404 on the feature's probe step, as
docker-registry 2.8 answers the OCI 1.1 referrers API) are not compared: if the target
implements them it is checked against the statuses the spec calls for instead, and if neither
does the steps are only listed by ``reference_gaps``. Differences listed in
``KNOWN_DIFFERENCES`` (each citing the spec; see docs/conformance.md) are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .runner import Observation
from .sequence import build_sequence
from .steps import Step

# Step name -> the passage of the OCI distribution spec that makes the target's answer right
# where it differs from docker-registry. Mirrored in docs/conformance.md, "Differences from
# docker-registry"; an entry without a spec citation does not belong here.
KNOWN_DIFFERENCES: Mapping[str, str] = {}


@attrs.frozen
class Difference:
    step: str
    field: str  # "status", "header <name>", "body", "spec status"
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
        if step.name in known:
            continue
        a, b = by_ref.get(step.name), by_target.get(step.name)
        if a is None or b is None:
            found.append(Difference(step.name, "observation", a is not None, b is not None))
        elif step.feature in missing_ref:
            if step.feature not in missing_target and b.status not in step.expected:
                found.append(Difference(step.name, "spec status", step.expected, b.status))
        else:
            found.extend(_field_differences(a, b))
    return found


def spec_departures(observations: Sequence[Observation],
                    steps: Sequence[Step] | None = None) -> list[Difference]:
    """Steps whose status is not one the spec calls for (informative: for the documentation)."""
    by_name = {step.name: step for step in steps or build_sequence()}
    return [Difference(o.step, "spec status", by_name[o.step].expected, o.status)
            for o in observations if o.status not in by_name[o.step].expected]


def report(differences: Sequence[Difference]) -> str:
    return "\n".join(str(d) for d in differences) or "no differences"
