"""Schemathesis hooks for `test_schemathesis.py` (loaded through SCHEMATHESIS_HOOKS).

- A claim's `wait` (0..30 s) is a real long-poll: a generated `"wait": 29` on
  an empty queue holds the request for 29 s. The run keeps every valid `wait`
  valid but shortens it to a tenth of a second, so the budget goes to requests.
- PostgreSQL cannot store NUL (U+0000) in a string: there the server answers
  422 for it, while SQLite stores it (docs/cueapi.md). JSON Schema cannot say
  so for the free-form `payload` and `metadata` objects at every depth, so
  generated data holding NUL is left out of the run on both backends.
"""

from __future__ import annotations

from typing import Any

import schemathesis

SHORT_WAIT = 0.1


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    return not _has_nul(body)


@schemathesis.hook
def filter_query(context: Any, query: Any) -> bool:
    return not _has_nul(query)


@schemathesis.hook
def filter_path_parameters(context: Any, path_parameters: Any) -> bool:
    return not _has_nul(path_parameters)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if isinstance(body, dict):
        wait = body.get("wait")
        # bool is an int too, but not a number the server takes: leave it to fail.
        if isinstance(wait, int | float) and not isinstance(wait, bool) and SHORT_WAIT < wait <= 30:
            body["wait"] = SHORT_WAIT
