"""Reading a BODY argument: strict JSON (errors show where the parse failed), or --text."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from cuemsg.cli._output import UsageError

_TEXT_HINT = "(to send it as text on purpose, add --text)"


class BodyError(UsageError):
    """The BODY is not strict JSON."""


def read_body(text: str, *, as_text: bool = False, stdin: TextIO | None = None) -> Any:
    """The body BODY names: JSON, strictly; with `as_text` the text itself. `-` reads stdin.

    Raises:
        BodyError: empty, not JSON (the message shows the line, column and a caret),
            or a NaN/Infinity, which JSON does not have.
    """
    if text == "-":
        text = (stdin or sys.stdin).read()
        if as_text:
            return text.removesuffix("\n")  # `echo hi | cuemsg send x - --text` sends "hi"
    if as_text:
        return text
    if not text.strip():
        raise BodyError(f'the body is empty: give JSON, e.g. {{}} or "" {_TEXT_HINT}')

    def no_constants(name: str) -> Any:
        raise BodyError(f"the body holds {name}, which is not JSON {_TEXT_HINT}")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise BodyError(_where(exc)) from None


def _where(exc: json.JSONDecodeError) -> str:
    """`exc` as a message that quotes the failing line with a caret under the column."""
    line = exc.doc.splitlines()[exc.lineno - 1] if exc.doc.strip() else ""
    return (
        f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
        f"{_TEXT_HINT}\n  {line}\n  {' ' * (exc.colno - 1)}^"
    )
