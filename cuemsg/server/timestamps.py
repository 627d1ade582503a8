"""Timestamps on the wire: ISO 8601 in, checked against the range every reader
can render, and UNIX seconds (what storage keeps) back out as ISO 8601.

Python's `datetime` holds years 1 to 9999 only. An offset can move a time that
looks valid across either end once it is normalised to UTC
(`9999-12-31T23:59:59-23:59` is in year 10000), and a float near the top end
can round up past it when turned back into a `datetime`. So every timestamp a
request carries must fall between `EARLIEST` and `LATEST` (a day inside each
end: no offset a reader applies can push it over), and rendering clamps what
an older version stored outside that range instead of failing the listing.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from cuemsg.server.errors import invalid

__all__ = ["EARLIEST", "LATEST", "check_seconds", "parse_time", "render"]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)

#: The earliest timestamp a request may carry (UTC).
EARLIEST = datetime(1, 1, 2, tzinfo=_UTC)
#: The latest timestamp a request may carry (UTC).
LATEST = datetime(9999, 12, 30, 23, 59, 59, tzinfo=_UTC)

_MIN_SECONDS = (EARLIEST - _EPOCH).total_seconds()
_MAX_SECONDS = (LATEST - _EPOCH).total_seconds()
_RANGE = f"from {EARLIEST.isoformat()} to {LATEST.isoformat()} (after conversion to UTC)"


def parse_time(value: str, field: str) -> float:
    """ISO 8601 to UNIX seconds; a time without offset is read as UTC.

    Raises:
        ApiProblem: 422 naming `field` when `value` is not ISO 8601 or lies
            outside the range every reader can render.
    """
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(field, f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    # Subtracting aware datetimes works even where the UTC result has no year.
    return check_seconds((parsed - _EPOCH).total_seconds(), field, value)


def check_seconds(seconds: float, field: str, shown: object = None) -> float:
    """`seconds` itself when it renders on every reader; else a 422 naming `field`."""
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS):
        what = seconds if shown is None else shown
        raise invalid(field, f"{what!r} is out of range: timestamps must be {_RANGE}")
    return seconds


def render(seconds: float | None) -> str | None:
    """UNIX seconds as ISO 8601 in UTC; None stays None.

    A value outside the accepted range (stored by a version that did not check)
    is clamped to the nearest end, so one bad row never fails a listing.
    """
    if seconds is None:
        return None
    if math.isnan(seconds):
        return EARLIEST.isoformat()
    clamped = min(max(seconds, _MIN_SECONDS), _MAX_SECONDS)
    return (_EPOCH + timedelta(seconds=clamped)).isoformat()
