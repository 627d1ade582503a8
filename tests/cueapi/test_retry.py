"""Retry decisions and the retrying send flow: pure, no network.

The flow is driven by hand with `httpx.Response` objects built here: no
transport, no server.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cuemsg._exceptions import (
    ClaimFailed,
    CueAPIError,
    RateLimited,
    ServerError,
    TransportError,
    TransportTimeout,
)
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._retry import RetryPolicy, send_with_retries
from cuemsg.cueapi._routes import Call, Send, Sleep

GET = routes.get_cue("c")
POST = routes.fire("c", {})  # no idempotency key: not safe to repeat
KEYED = routes.fire("c", {"idempotency_key": "k"})
POLICY = RetryPolicy(max_retries=3, backoff_base=0.1, backoff_max=1.0)


def _error(status: int, code: str) -> CueAPIError:
    return CueAPIError.from_response(status, {"error": {"code": code, "message": code}})


def test_backoff_grows_with_jitter_and_is_bounded() -> None:
    assert POLICY.backoff(0, rand=lambda: 0.0) == pytest.approx(0.05)
    assert POLICY.backoff(0, rand=lambda: 1.0) == pytest.approx(0.1)
    assert POLICY.backoff(2, rand=lambda: 1.0) == pytest.approx(0.4)
    assert POLICY.backoff(10, rand=lambda: 1.0) == pytest.approx(1.0)
    for n in range(8):
        assert 0 < POLICY.backoff(n) <= 1.0


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), httpx.PoolTimeout("t")]
)
def test_never_sent_is_safe_for_any_call(exc: httpx.TransportError) -> None:
    assert POLICY.after_transport_error(POST, exc, 0) is not None
    assert POLICY.after_transport_error(GET, exc, 0) is not None


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadError("reset"), httpx.ReadTimeout("t"), httpx.RemoteProtocolError("dropped")],
)
def test_lost_answers_are_repeated_only_when_safe(exc: httpx.TransportError) -> None:
    assert POLICY.after_transport_error(POST, exc, 0) is None
    assert POLICY.after_transport_error(KEYED, exc, 0) is not None
    assert POLICY.after_transport_error(GET, exc, 0) is not None
    assert POLICY.after_transport_error(routes.claim_next(worker_id="w"), exc, 0) is None


def test_server_errors_are_repeated_only_when_safe() -> None:
    err = _error(503, "unavailable")
    assert POLICY.after_error(GET, err, 0) is not None
    assert POLICY.after_error(KEYED, err, 0) is not None
    assert POLICY.after_error(POST, err, 0) is None
    assert POLICY.after_error(routes.heartbeat("e", worker_id="w"), err, 0) is not None


def test_rate_limited_is_repeated_for_any_call_after_retry_after() -> None:
    err = RateLimited("slow down", retry_after=2.5, status=429, code="rate_limited")
    assert POLICY.after_error(POST, err, 0) == 2.5
    no_header = RateLimited("slow down", status=429, code="rate_limited")
    assert 0 < (POLICY.after_error(POST, no_header, 0) or 0) <= 0.1
    too_long = RateLimited("later", retry_after=3600, status=429, code="rate_limited")
    assert POLICY.after_error(POST, too_long, 0) is None


@pytest.mark.parametrize(
    "err", [_error(404, "cue_not_found"), _error(409, "claim_failed"), _error(422, "bad")]
)
def test_client_errors_are_never_repeated(err: CueAPIError) -> None:
    assert POLICY.after_error(GET, err, 0) is None


def test_retries_are_bounded() -> None:
    err = _error(500, "boom")
    assert POLICY.after_error(GET, err, 2) is not None
    assert POLICY.after_error(GET, err, 3) is None
    assert RetryPolicy(max_retries=0).after_transport_error(GET, httpx.ConnectError("x"), 0) is None


def _drive(call: Call, answers: list[Any], policy: RetryPolicy = POLICY) -> tuple[Any, list[Any]]:
    """Run the flow, answering each Send with the next item (a Response or an exception)."""
    steps: list[Any] = []
    flow = send_with_retries(call, policy)
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            step = flow.throw(exc) if exc is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value, steps
        steps.append(step)
        value, exc = None, None
        if isinstance(step, Send):
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                exc = answer
            else:
                value = answer


def _resp(status: int, json: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=json, headers=headers)


def test_flow_repeats_a_get_after_503() -> None:
    result, steps = _drive(GET, [_resp(503, {"error": {"code": "x"}}), _resp(200, {"id": "c"})])
    assert result == {"id": "c"}
    assert [type(s) for s in steps] == [Send, Sleep, Send]


def test_flow_raises_the_last_error_when_retries_run_out() -> None:
    answers = [_resp(500, {"error": {"code": "boom", "message": "m"}})] * 4
    with pytest.raises(ServerError):
        _drive(GET, answers)
    assert answers == []  # 1 try + 3 repeats


def test_flow_does_not_repeat_an_unkeyed_fire_after_a_lost_answer() -> None:
    with pytest.raises(TransportError) as info:
        _drive(POST, [httpx.ReadError("reset")])
    assert isinstance(info.value.__cause__, httpx.ReadError)
    assert not isinstance(info.value, TransportTimeout)


def test_flow_timeouts_become_transport_timeout() -> None:
    with pytest.raises(TransportTimeout) as info:
        _drive(POST, [httpx.ReadTimeout("slow")])
    assert isinstance(info.value, TimeoutError)


def test_flow_waits_retry_after_on_429() -> None:
    answers = [
        _resp(429, {"error": {"code": "rate_limited"}}, {"Retry-After": "1.5"}),
        _resp(200, {"id": "e"}),
    ]
    result, steps = _drive(POST, answers)
    assert result == {"id": "e"} and steps[1] == Sleep(1.5)


def test_flow_reads_404_on_a_repeated_delete_as_done() -> None:
    call = routes.delete_cue("c")
    result, _ = _drive(call, [httpx.ReadError("lost"), _resp(404, {"error": {"code": "x"}})])
    assert result is None
    with pytest.raises(ClaimFailed):  # a first-try error is the caller's
        _drive(GET, [_resp(409, {"error": {"code": "claim_failed"}})])
    with pytest.raises(CueAPIError):
        _drive(call, [_resp(404, {"error": {"code": "cue_not_found"}})])
