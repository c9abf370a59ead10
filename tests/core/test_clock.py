"""RFC 3339 parsing and overflow-safe arithmetic (SPEC §5; issue 9 "expires_at = 9999-12-31")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openexec_mcp.core.clock import EARLIEST, LATEST, format_timestamp, parse_rfc3339, shift
from openexec_mcp.errors import MalformedInputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21t10:00:00z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T12:30:00+02:30", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00.123456789Z", datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_parse_to_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21T10:00:00",  # naive
        "2026-11-21 10:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-21T10:00:60Z",  # leap second: a datetime cannot hold it
        "2026-11-21T10:00:00+01:60",
        "9999-12-31T23:59:59-01:00",  # past the last datetime once in UTC
        "0001-01-01T00:00:00+01:00",
        "２０２６-11-21T10:00:00Z",
        "",
    ],
)
def test_naive_impossible_or_unrepresentable_timestamps_are_malformed(text: str) -> None:
    with pytest.raises(MalformedInputError):
        parse_rfc3339(text)


def test_shift_saturates_instead_of_overflowing() -> None:
    end = parse_rfc3339("9999-12-31T23:59:59Z")
    assert shift(end, 60) == LATEST
    assert shift(parse_rfc3339("0001-01-01T00:00:30Z"), -60) == EARLIEST
    assert shift(end, 10**12) == LATEST
    assert shift(end, -1) == datetime(9999, 12, 31, 23, 59, 58, tzinfo=UTC)
    with pytest.raises(ValueError):
        shift(datetime(2026, 1, 1), 1)


def test_format_timestamp_is_utc_with_milliseconds() -> None:
    assert format_timestamp(parse_rfc3339("2026-11-21T12:00:00.1239+02:00")) == "2026-11-21T10:00:00.123Z"
