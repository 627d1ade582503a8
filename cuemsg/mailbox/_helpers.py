"""Small pure helpers the flows share: cutting outcome text, error pauses, time parsing."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from cuemsg._exceptions import (
    RateLimited,
    ServerError,
    TransportError,
)
from cuemsg.envelope import (
    from_timestamp,
)
from cuemsg.mailbox._config import ERROR_PAUSE, OUTCOME_TEXT_LIMIT

T = TypeVar("T")


def cut(text: str | None) -> str | None:
    if text is None or len(text) <= OUTCOME_TEXT_LIMIT:
        return text
    return text[: OUTCOME_TEXT_LIMIT - 3] + "..."


TRANSIENT = (TransportError, ServerError, RateLimited)


def pause_after(exc: BaseException, failures: int) -> float:
    if isinstance(exc, RateLimited) and exc.retry_after:
        return float(exc.retry_after)
    return float(min(ERROR_PAUSE * 2 ** min(failures, 5), 5.0))


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def error_name(exc: BaseException) -> str:
    return type(exc).__name__


def as_datetime(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return from_timestamp(float(value))
