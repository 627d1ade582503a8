"""Small pure helpers the flows share: cutting outcome text, error pauses, time parsing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cuemsg._exceptions import RateLimited, ServerError, TransportError
from cuemsg.envelope import from_timestamp
from cuemsg.mailbox._config import ERROR_PAUSE, OUTCOME_TEXT_LIMIT


def cut(text: str | None) -> str | None:
    """`text` cut to the outcome limit (`OUTCOME_TEXT_LIMIT`), marked with an ellipsis."""
    if text is None or len(text) <= OUTCOME_TEXT_LIMIT:
        return text
    return text[: OUTCOME_TEXT_LIMIT - 3] + "..."


#: Errors a loop outlives: it pauses (`pause_after`) and tries again.
TRANSIENT = (TransportError, ServerError, RateLimited)


def pause_after(exc: BaseException, failures: int) -> float:
    """The pause after `failures` errors in a row: the server's `Retry-After`, else doubling."""
    if isinstance(exc, RateLimited) and exc.retry_after:
        return float(exc.retry_after)
    return float(min(ERROR_PAUSE * 2 ** min(failures, 5), 5.0))


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time from a server record as UNIX seconds (None if it is not one)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def error_name(exc: BaseException) -> str:
    """The name an error reply gives a handler's exception."""
    return type(exc).__name__


def as_datetime(value: datetime | float | None) -> datetime | None:
    """A `send_at` given as UNIX seconds or a datetime, as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return from_timestamp(float(value))
