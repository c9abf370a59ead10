"""Time: the one RFC 3339 parser, the one timestamp format receipts use, overflow-safe arithmetic.

Receipts write RFC 3339 UTC with ``Z`` and millisecond precision (SPEC §7). Artifacts arrive as
RFC 3339 ``date-time`` with ``Z`` or an offset (SPEC §5); naive timestamps are malformed. Every
addition a verifier makes to an untrusted instant goes through :func:`shift`, which saturates at
the ends of :class:`datetime` instead of raising ``OverflowError`` (an artifact expiring
9999-12-31T23:59:59Z plus the skew must be refused for its lifetime, not crash the check).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from openexec_mcp.errors import MalformedInputError

__all__ = ["EARLIEST", "LATEST", "format_timestamp", "parse_rfc3339", "shift", "utc_now"]

EARLIEST: Final = datetime.min.replace(tzinfo=UTC)
"""The earliest aware UTC instant a datetime holds (0001-01-01T00:00:00Z)."""
LATEST: Final = datetime.max.replace(tzinfo=UTC)
"""The latest aware UTC instant a datetime holds (9999-12-31T23:59:59.999999Z)."""

# RFC 3339 §5.6 date-time. [0-9], not \d, which would also match non-ASCII digits.
_RFC3339: Final = re.compile(
    r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with milliseconds, e.g. ``2026-11-21T10:00:00.123Z``.

    Raises:
        ValueError: ``moment`` is naive.
    """
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an untrusted RFC 3339 ``date-time`` (RFC 3339 §5.6) into an aware UTC datetime.

    Args:
        text: ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)``; ``T`` and ``Z`` in either case.
            Digits beyond microseconds are dropped (a datetime cannot hold them).

    Returns:
        The instant, converted to UTC.

    Raises:
        MalformedInputError: Not a string of that form (naive timestamps included), not a real
            date and time (month 13, a leap second ``:60``, offset minutes over 59), or an
            instant outside what a datetime holds once converted to UTC.
    """
    match = _RFC3339.match(text) if isinstance(text, str) else None  # pyright: ignore[reportUnnecessaryIsInstance]
    if match is None:
        raise MalformedInputError("expected an RFC 3339 timestamp with 'Z' or an offset, e.g. 2026-11-21T10:00:00Z")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    microsecond = int(((match.group(7) or "") + "000000")[:6])
    sign, offset_hours, offset_minutes = match.group(8, 9, 10)
    try:
        tz = UTC
        if sign is not None:
            if int(offset_minutes) > 59:
                raise ValueError("offset minutes out of range")
            offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        raise MalformedInputError("timestamp is not a valid date and time") from None


def shift(moment: datetime, seconds: float) -> datetime:
    """Return ``moment + seconds``, saturated to [:data:`EARLIEST`, :data:`LATEST`] instead of overflowing.

    Args:
        moment: An aware datetime.
        seconds: The offset in seconds, negative to go back.

    Raises:
        ValueError: ``moment`` is naive.
    """
    if moment.utcoffset() is None:
        raise ValueError("shift() needs an aware datetime")
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return LATEST if seconds > 0 else EARLIEST
