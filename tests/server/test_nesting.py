"""Deeply nested JSON bodies answer 422 with a clear error on every route that
takes a body, never a 500 from a `RecursionError` in the decoder."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import pytest

from cuemsg.server import wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.nesting import MAX_JSON_DEPTH, check_depth
from tests.server.conftest import Api, error_of


def _nested(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def _deep_body(field: str, levels: int = 2000) -> bytes:
    # Built as text: json.dumps itself would hit the recursion limit at 2,000 levels.
    return b'{"' + field.encode() + b'": ' + b"[" * levels + b"]" * levels + b"}"


def _routes(api: Api) -> list[tuple[str, str, str]]:
    """(method, path, a field of its body) for every route family that takes a body."""
    cue = api.cue()
    execution = api.fire(cue["id"])["id"]
    return [
        ("POST", "/v1/cues", "payload"),
        ("PATCH", f"/v1/cues/{cue['id']}", "payload"),
        ("POST", f"/v1/cues/{cue['id']}/fire", "payload_override"),
        ("POST", "/v1/fire", "fires"),
        ("POST", "/v1/executions/claim", "worker_id"),
        ("POST", f"/v1/executions/{execution}/claim", "worker_id"),
        ("POST", f"/v1/executions/{execution}/outcome", "metadata"),
        ("POST", "/v1/executions/outcomes", "outcomes"),
        ("POST", "/v1/worker/heartbeat", "handlers"),
        ("POST", "/v1/auth/register", "email"),
    ]


def test_2000_levels_is_422_on_every_body_route(api: Api) -> None:
    for method, path, field in _routes(api):
        answer = api.http.request(method, path, content=_deep_body(field))
        err = error_of(answer, 422, "validation_error")
        assert "nested too deeply" in err["message"], (method, path)
        assert str(MAX_JSON_DEPTH) in err["message"]
    assert api.http.get("/v1/executions").json()["total"] == 1  # only the setup's fire


def test_the_limit_itself_is_accepted_and_one_more_refused(api: Api) -> None:
    cue = api.cue()
    # The body and `payload_override` are two levels of the limit.
    ok = {"payload_override": {"v": _nested(MAX_JSON_DEPTH - 2)}}
    answer = api.http.post(f"/v1/cues/{cue['id']}/fire", content=json.dumps(ok))
    assert answer.status_code == 200, answer.text
    stored = api.execution(answer.json()["id"])["payload"]["v"]
    assert stored == ok["payload_override"]["v"]
    over = {"payload_override": {"v": _nested(MAX_JSON_DEPTH - 1)}}
    answer = api.http.post(f"/v1/cues/{cue['id']}/fire", content=json.dumps(over))
    error_of(answer, 422, "validation_error")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 5000 + '\\"{' * 500, "n": [[1]]}).encode()
    check_depth(text)
    assert wire.decode(text, dict)["n"] == [[1]]


@pytest.mark.parametrize("text", ["\\", '\\"', '"', "]]", "\\]", "\n[", ""])
def test_strings_with_escapes_around_a_deep_value(text: str) -> None:
    # Escaped backslashes and quotes end (or not) their string where JSON says.
    for levels, refused in ((MAX_JSON_DEPTH - 1, False), (MAX_JSON_DEPTH, True)):
        body = json.dumps([text, {text: text}, _nested(levels), text, [[text]] * 60]).encode()
        if refused:
            with pytest.raises(ApiProblem):
                check_depth(body)
        else:
            check_depth(body)


@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="from Python 3.12 C code's recursion has its own limit, which "
    "sys.setrecursionlimit does not lower: the fault cannot be provoked this way",
)
def test_a_recursion_error_in_the_decoder_is_still_a_422() -> None:
    # Fault injection: a recursion limit just above this frame makes msgspec
    # give up within the allowed depth, as a deep call stack would.
    body = json.dumps({"v": _nested(MAX_JSON_DEPTH // 2)}).encode()
    depth = len(inspect.stack(0))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 20)
    try:
        with pytest.raises(ApiProblem) as caught:
            wire.decode(body, dict)
    finally:
        sys.setrecursionlimit(old)
    assert caught.value.status == 422
    assert "nested too deeply" in caught.value.message
