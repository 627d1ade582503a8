"""Schemathesis hooks for `test_schemathesis.py` (loaded through SCHEMATHESIS_HOOKS).

Where JSON Schema cannot say all that the server checks, the run is told here,
so that what it calls schema-valid is what the server accepts:

- `format: cron` (a custom format of `schedule.cron`): valid expressions are
  drawn from field values the cron parser accepts (`schedules.py` checks the
  expression; the schema's pattern only holds it to five printable fields).
- A bracketed host in a webhook URL must be a real IPv6 address; the pattern
  lets any hex, colons and dots through, so URLs that do not parse are left out.
- PostgreSQL cannot store NUL (U+0000) in a string: there the server answers
  422 for it, while SQLite stores it (docs/cueapi.md). JSON Schema cannot say
  so for the free-form `payload` and `metadata` objects at every depth, so
  generated data holding NUL is left out on both backends.
- A claim's `wait` (0..30 s) is a real long-poll: a generated `"wait": 29` on
  an empty queue holds the request for 29 s. Every valid `wait` stays valid but
  is shortened to a tenth of a second, so the budget goes to requests.
- `format: date-time`: the server takes timestamps from `EARLIEST` to `LATEST`
  once normalised to UTC (a day inside each end of what `datetime` holds, so
  no reader's offset can push one over: docs/cueapi.md); JSON Schema has no
  range for a format, so valid timestamps are drawn from that range, with any
  offset.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import schemathesis
from hypothesis import strategies as st

from cuemsg.server.timestamps import EARLIEST, LATEST

SHORT_WAIT = 0.1

_CRON_FIELDS = (
    ["*", "0", "7", "*/5", "0-30", "15,45"],  # minute
    ["*", "0", "9", "*/2", "8-17"],  # hour
    ["*", "1", "15", "1-7", "L"],  # day of month
    ["*", "1", "6", "1-6", "JAN"],  # month
    ["*", "0", "7", "1-5", "MON-FRI"],  # day of week
)
schemathesis.openapi.format(
    "cron",
    st.tuples(*(st.sampled_from(values) for values in _CRON_FIELDS)).map(" ".join),
)


def _timestamp(utc: Any, minutes: int) -> str:
    zone = timezone(timedelta(minutes=minutes))
    return str(utc.replace(tzinfo=timezone.utc).astimezone(zone).isoformat())


schemathesis.openapi.format(
    "date-time",
    st.builds(
        _timestamp,
        st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)),
        st.integers(-23 * 60 - 59, 23 * 60 + 59),
    ),
)


def _fits(value: Any) -> bool:
    """No NUL anywhere, and every http(s) string a URL that parses."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        if value.startswith(("http://", "https://")):
            try:
                urlsplit(value)
            except ValueError:
                return False
        return True
    if isinstance(value, dict):
        return all(_fits(k) and _fits(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_fits(v) for v in value)
    return True


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    return _fits(body)


@schemathesis.hook
def filter_query(context: Any, query: Any) -> bool:
    return _fits(query)


@schemathesis.hook
def filter_path_parameters(context: Any, path_parameters: Any) -> bool:
    return _fits(path_parameters)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if isinstance(body, dict):
        wait = body.get("wait")
        # bool is an int too, but not a number the server takes: leave it to fail.
        if isinstance(wait, int | float) and not isinstance(wait, bool) and SHORT_WAIT < wait <= 30:
            body["wait"] = SHORT_WAIT
