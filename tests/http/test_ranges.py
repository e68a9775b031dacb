"""Byte ranges: the HTTP ``Range`` request header and Kraken's upload ``Content-Range``."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmreg.errors import BLOB_UPLOAD_INVALID, RANGE_INVALID, SwarmregError
from swarmreg.http.ranges import ByteRange, parse_range_header, parse_upload_range

# --- Range request header -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_no_range_header_means_the_whole_blob(value):
    assert parse_range_header(value, 100) is None


@pytest.mark.parametrize("value, expected", [
    ("bytes=0-9", ByteRange(0, 10)),       # inclusive end on the wire, exclusive in ByteRange
    ("bytes=10-10", ByteRange(10, 11)),    # a single byte
    ("bytes=5-", ByteRange(5, 100)),       # open-ended
    ("bytes=-10", ByteRange(90, 100)),     # suffix: the last 10 bytes
    ("bytes=-1000", ByteRange(0, 100)),    # a suffix longer than the blob is the whole blob
    ("bytes=50-1000", ByteRange(50, 100)),  # an end past the size clamps
    ("bytes=99-99", ByteRange(99, 100)),
    (" bytes=0-9 ", ByteRange(0, 10)),
])
def test_satisfiable_ranges(value, expected):
    assert parse_range_header(value, 100) == expected


def test_suffix_range_of_an_empty_blob_serves_it_whole():
    """RFC 9110 calls it satisfiable, but a 206 cannot describe zero bytes (was ByteRange(0, 0))."""
    assert parse_range_header("bytes=-1", 0) is None


def test_content_range_uses_an_inclusive_end():
    byte_range = parse_range_header("bytes=0-9", 100)
    assert byte_range.length == 10
    assert byte_range.content_range(100) == "bytes 0-9/100"


@pytest.mark.parametrize("value, size", [
    ("bytes=100-", 100),     # start == size
    ("bytes=100-200", 100),
    ("bytes=500-", 100),
    ("bytes=0-", 0),         # nothing to serve of an empty blob
    ("bytes=9-5", 100),      # end before start
    ("bytes=-0", 100),       # empty suffix
])
def test_unsatisfiable_ranges_are_416(value, size):
    with pytest.raises(SwarmregError) as info:
        parse_range_header(value, size)
    assert info.value.code is RANGE_INVALID
    assert info.value.status == 416


@pytest.mark.parametrize("value", [
    "bytes=0-9,20-29",   # several ranges: we serve the whole blob instead
    "items=0-9",         # another unit
    "bytes=-",
    "bytes=a-b",
    "bytes 0-9",
    "0-9",
])
def test_unsupported_forms_serve_the_whole_blob(value):
    assert parse_range_header(value, 100) is None


# --- Kraken upload Content-Range ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0,10", "0-10", " 0,10 "])
def test_upload_range_is_start_to_exclusive_end(value):
    assert parse_upload_range(value) == ByteRange(0, 10)


def test_upload_range_with_large_offsets():
    assert parse_upload_range("1073741824,2147483648") == ByteRange(1 << 30, 1 << 31)


@pytest.mark.parametrize("value", [None, "", "bytes 0-9/10", "0", "0,", ",10", "a,b", "0;10", "-5,10",
                                   "0,10,20", "1" * 20 + ",2" + "0" * 20])
def test_missing_or_malformed_upload_range_is_400(value):
    with pytest.raises(SwarmregError) as info:
        parse_upload_range(value)
    assert info.value.code is BLOB_UPLOAD_INVALID
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["10,10", "10,5", "0,0"])
def test_empty_or_backwards_upload_range_is_416(value):
    with pytest.raises(SwarmregError) as info:
        parse_upload_range(value)
    assert info.value.code is RANGE_INVALID
    assert info.value.status == 416


# --- fuzzing: a valid range inside bounds, or a SwarmregError, never anything else ----------------

range_like = st.one_of(
    st.text(),
    st.from_regex(r"\s*bytes=\d{0,25}-\d{0,25}\s*", fullmatch=True),
    st.builds(lambda a, b, sep: f"bytes={a}{sep}{b}",
              st.integers(0, 10**20), st.integers(0, 10**20), st.sampled_from(["-", ",", "--", ""])),
)
upload_range_like = st.one_of(
    st.text(),
    st.from_regex(r"\s*\d{0,25}[,-]\d{0,25}\s*", fullmatch=True),
    st.builds(lambda a, b, sep: f"{a}{sep}{b}",
              st.integers(-10, 10**20), st.integers(-10, 10**20), st.sampled_from([",", "-", ", "])),
)


@settings(max_examples=10_000, deadline=None)
@given(value=st.one_of(st.none(), range_like), size=st.integers(0, 1 << 62))
def test_fuzz_range_header(value, size):
    try:
        result = parse_range_header(value, size)
    except SwarmregError as error:
        assert error.code is RANGE_INVALID
        return
    if result is not None:
        assert 0 <= result.start < result.end <= size


@settings(max_examples=10_000, deadline=None)
@given(value=st.one_of(st.none(), upload_range_like))
def test_fuzz_upload_range(value):
    try:
        result = parse_upload_range(value)
    except SwarmregError as error:
        assert error.code in (BLOB_UPLOAD_INVALID, RANGE_INVALID)
        return
    assert 0 <= result.start < result.end < 10**19


@pytest.mark.parametrize("value, expected", [
    ("bytes=0-" + "9" * 5000, ByteRange(0, 100)),  # an end past any size clamps, as a short one does
    ("bytes=-" + "9" * 5000, ByteRange(0, 100)),   # a suffix longer than any blob is the whole blob
    ("bytes=" + "0" * 5000 + "5-", ByteRange(5, 100)),  # leading zeros are no number of their own
])
def test_ranges_with_thousands_of_digits_parse(value, expected):
    """int() refuses more than 4300 digits: such a Range was a ValueError, answered 500 INTERNAL."""
    assert parse_range_header(value, 100) == expected


def test_a_start_with_thousands_of_digits_is_416():
    with pytest.raises(SwarmregError) as refused:
        parse_range_header("bytes=" + "9" * 5000 + "-", 100)
    assert refused.value.code is RANGE_INVALID
