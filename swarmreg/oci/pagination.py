"""The ``n`` of a paginated list (tag lists, the catalog), parsed the same way on every port
that takes it: the registry ports (proxy and agents) and the index."""

from __future__ import annotations

from swarmreg.errors import PAGINATION_NUMBER_INVALID, SwarmregError

# The largest page a client may ask for. A bound, not only a check for digits: an unbounded
# count overflowed SQLite's integers (a 500), and the proxy passes its n on to the index.
MAX_PAGE = 10_000


def parse_page_size(text: str | None) -> int | None:
    """``n``: None when absent or empty, else an ASCII count from 0 to MAX_PAGE;
    otherwise PAGINATION_NUMBER_INVALID (400), as distribution answers."""
    if text is None or text == "":
        return None
    # Length first: int() of a huge string is slow, and isdigit() accepts non-ASCII digits.
    if len(text) > len(str(MAX_PAGE)) or not text.isascii() or not text.isdigit() or int(text) > MAX_PAGE:
        raise SwarmregError(PAGINATION_NUMBER_INVALID, f"n must be an integer from 0 to {MAX_PAGE}",
                            {"n": text[:20], "max": MAX_PAGE})
    return int(text)
