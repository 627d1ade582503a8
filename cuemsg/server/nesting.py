"""How deeply a JSON request body may nest, checked on the raw bytes before decoding.

msgspec decodes (and encodes) nested JSON recursively, up to Python's recursion
limit: a body 2,000 levels deep would raise `RecursionError` in the decoder,
and one a little shallower could be stored, then fail every listing or a
receiver that adds a few levels of its own. A fixed limit well below that
refuses such bodies at the door, the same way whatever the stack depth.
"""

from __future__ import annotations

from itertools import accumulate

from cuemsg.server.errors import ApiProblem

__all__ = ["MAX_JSON_DEPTH", "check_depth", "too_deep"]

#: The deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 100

_NOT_MARK = bytes(b for b in range(256) if b not in b'"[]{}')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep() -> ApiProblem:
    return ApiProblem(
        422,
        "validation_error",
        f"body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects",
    )


def check_depth(body: bytes) -> None:
    """Raise a 422 when `body` nests arrays and objects past `MAX_JSON_DEPTH`."""
    # Cheap first: a body with few brackets cannot nest deeply (most bodies).
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    # Brackets inside strings do not nest: drop the strings, with C-speed steps only
    # (a batch of 50 messages has hundreds of brackets). Escaped backslashes go
    # first, then escaped quotes: every quote left opens or closes a string.
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Keep the quotes and brackets; an empty string ("") holds no bracket.
    marks = body.translate(None, _NOT_MARK).replace(b'""', b"")
    brackets = b"".join(marks.split(b'"')[::2])  # the parts outside strings
    if brackets and max(accumulate(map(_STEP.__getitem__, brackets))) > MAX_JSON_DEPTH:
        raise too_deep()
