"""The distribution spec's manifest, auth and rate codes, with distribution's statuses."""

import pytest

from swarmreg.errors import SwarmregError, error_code


@pytest.mark.parametrize(("code", "status", "message"), [
    ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"),
    ("MANIFEST_INVALID", 400, "manifest invalid"),
    ("MANIFEST_UNKNOWN", 404, None),
    ("MANIFEST_UNVERIFIED", 400, "manifest failed signature verification"),
    ("NAME_UNKNOWN", 404, "repository name not known to registry"),
    ("TAG_INVALID", 400, "manifest tag did not match URI"),
    ("UNAUTHORIZED", 401, "authentication required"),
    ("DENIED", 403, "requested access to the resource is denied"),
    ("TOOMANYREQUESTS", 429, "too many requests"),
])
def test_spec_codes_are_registered(code, status, message):
    registered = error_code(code)
    assert registered.code == code and registered.status == status
    if message is not None:
        assert registered.message == message
    envelope = SwarmregError(registered).envelope()
    assert envelope["errors"][0]["code"] == code


def test_an_error_may_carry_another_status_than_its_code():
    """A manifest over the size limit: the spec's 413, with its MANIFEST_INVALID code."""
    error = SwarmregError(error_code("MANIFEST_INVALID"), "too large", status=413)
    assert error.status == 413 and error.code.status == 400
    assert error.envelope()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert SwarmregError(error_code("MANIFEST_INVALID")).status == 400
