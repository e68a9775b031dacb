"""Durations as ociregistry writes them, one parser for the configuration, the admin API and the CLI."""

from __future__ import annotations

import pytest

from swarmreg.config import ConfigError, load_config
from swarmreg.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1h30m", 5400), ("0", 0), ("3600", 3600),
    (" 2D ", 172800), ("1.5", 1.5), (600, 600), (2.5, 2.5),
])
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "-1d", "-5", "1.5h", "30 d", "1e3", True, None, [], "nan",
                                  float("inf"), 10**13, "9" * 40 + "d"])
def test_anything_else_is_refused_with_what_a_duration_looks_like(text: object) -> None:
    with pytest.raises(ValueError, match="30d"):
        parse_duration(text)


def test_format_is_the_largest_unit_that_divides() -> None:
    assert [format_duration(s) for s in (2592000, 43200, 5400, 90, 0, 1.5)] == ["30d", "12h", "90m", "90s", "0s",
                                                                               "1.5s"]
    assert all(parse_duration(format_duration(s)) == s for s in (2592000, 43200, 5400, 90))


def test_the_prune_configuration_takes_them() -> None:
    config = load_config(None, ["prune.duration=12h", "prune.frequency=3600", "prune.enabled=true"])
    assert (config.prune.duration, config.prune.frequency, config.prune.enabled) == (43200, 3600, True)
    assert load_config().prune.duration == 30 * 86400 and load_config().prune.count == -1
    with pytest.raises(ConfigError, match="prune.frequency"):
        load_config(None, ["prune.frequency=0"])
    with pytest.raises(ConfigError, match="prune.type"):
        load_config(None, ["prune.type=pattern"])  # on demand only: [prune] has no expr
