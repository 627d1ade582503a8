"""Route building and answer parsing: pure, no network."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
import pytest

from cuemsg._exceptions import (
    AuthenticationError,
    ClaimFailed,
    Conflict,
    CueAPIError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ValidationError,
)
from cuemsg.cueapi import _routes as routes


def _err(status: int, code: str, **extra: Any) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": "m", "status": status, **extra}})


def test_fire_sends_no_merge_strategy_unless_given() -> None:
    body = routes.fire_body(
        payload_override={"a": 1}, merge_strategy=None, send_at=None, idempotency_key=None
    )
    assert body == {"payload_override": {"a": 1}}
    call = routes.fire("cue_x", body)
    assert (call.method, call.path, call.json, call.retry_safe) == (
        "POST",
        "/v1/cues/cue_x/fire",
        {"payload_override": {"a": 1}},
        False,
    )


def test_fire_with_key_is_retry_safe() -> None:
    body = routes.fire_body(
        payload_override=None, merge_strategy="replace", send_at=None, idempotency_key="k1"
    )
    assert body == {"merge_strategy": "replace", "idempotency_key": "k1"}
    assert routes.fire("c", body).retry_safe


def test_fire_batch_is_safe_only_when_every_item_has_a_key() -> None:
    assert routes.fire_batch([{"cue_id": "a", "idempotency_key": "1"}]).retry_safe
    assert not routes.fire_batch(
        [{"cue_id": "a", "idempotency_key": "1"}, {"cue_id": "b"}]
    ).retry_safe
    assert routes.fire_batch([]).path == "/v1/fire"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
        (0, "1970-01-01T00:00:00+00:00"),
        (1.5, "1970-01-01T00:00:01.500000+00:00"),
        (datetime(2030, 1, 1, 12), "2030-01-01T12:00:00+00:00"),  # naive means UTC
        (
            datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
            "2030-01-01T10:00:00+00:00",
        ),
    ],
)
def test_send_at_shapes(value: Any, expected: str) -> None:
    assert routes.to_timestamp(value) == expected


@pytest.mark.parametrize("value", [True, None, object(), [1]])
def test_send_at_rejects_other_types(value: Any) -> None:
    with pytest.raises(TypeError, match="send_at"):
        routes.to_timestamp(value)


def test_heartbeat_and_outcome_always_send_worker_id() -> None:
    hb = routes.heartbeat("e1", worker_id="w1")
    assert hb.headers == {"X-Worker-Id": "w1"} and hb.json is None and hb.retry_safe
    body = routes.outcome_body(success=True, result=None, error=None, metadata=None)
    oc = routes.report_outcome("e1", body, worker_id="w1")
    assert oc.headers == {"X-Worker-Id": "w1"} and oc.json == {"success": True}
    assert not oc.retry_safe  # write-once: a repeat would answer 409
    batch = routes.report_outcomes([{"execution_id": "e1", "success": False}], worker_id="w2")
    assert batch.headers == {"X-Worker-Id": "w2"}
    assert batch.json == {"outcomes": [{"execution_id": "e1", "success": False}]}


def test_claim_next_sends_extension_fields_only_when_given() -> None:
    plain = routes.claim_next(worker_id="w")
    assert plain.json == {"worker_id": "w"} and plain.wait == 0 and not plain.retry_safe
    ext = routes.claim_next(worker_id="w", task="t", agent="a", wait=5, limit=3)
    assert ext.json == {"worker_id": "w", "task": "t", "agent": "a", "wait": 5, "limit": 3}
    assert ext.wait == 5


def test_bodies_keep_their_field_order_and_drop_none() -> None:
    # Written out field by field: the same keys, in the same order, as `_drop_none` gives.
    settle = [{"execution_id": "e1", "success": True}]
    full = routes.claim_next(worker_id="w", task="t", agent="a", wait=1.5, limit=2, settle=settle)
    assert list(full.json) == ["worker_id", "task", "agent", "wait", "limit", "settle"]
    assert full.json["settle"] is settle
    assert routes.claim_next(worker_id="w", limit=2).json == {"worker_id": "w", "limit": 2}
    fire = routes.fire_body(
        payload_override={"a": 1}, merge_strategy="replace", send_at=0, idempotency_key="k"
    )
    assert list(fire) == ["payload_override", "merge_strategy", "send_at", "idempotency_key"]
    assert fire["send_at"] == "1970-01-01T00:00:00+00:00"
    empty = routes.fire_body(
        payload_override=None, merge_strategy=None, send_at=None, idempotency_key=None
    )
    assert empty == {}
    outcome = routes.outcome_body(success=False, result="r", error="e", metadata={"m": 1})
    assert list(outcome) == ["success", "result", "error", "metadata"]
    assert routes.outcome_body(success=True, result=None, error=None, metadata=None) == {
        "success": True
    }


def test_calls_are_frozen_values_with_fresh_defaults() -> None:
    # `Call` writes its own __init__ (speed): it must still act as the dataclass it is.
    a, b = routes.Call("GET", "/v1/x"), routes.Call("GET", "/v1/x")
    assert a == b and a.params == {} and a.headers == {} and a.params is not b.params
    assert a.auth and not a.retry_safe and a.wait == 0.0 and a.done_on_repeat == frozenset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.path = "/v1/y"  # type: ignore[misc]
    assert dataclasses.replace(a, path="/v1/y").path == "/v1/y"
    assert routes.Send(a) == routes.Send(b) and routes.Send(a).call is a


def test_queries_drop_none() -> None:
    assert routes.list_cues(status=None, limit=10, offset=None).params == {"limit": 10}
    call = routes.list_executions(cue_id="c", status="pending", limit=None, offset=0)
    assert call.params == {"cue_id": "c", "status": "pending", "offset": 0}
    assert routes.list_claimable(task="t", agent=None).params == {"task": "t"}


def test_auth_and_safety_flags() -> None:
    assert not routes.info().auth and routes.info().retry_safe
    assert not routes.register("a@b.c").auth and not routes.register("a@b.c").retry_safe
    assert routes.get_cue("c").retry_safe and routes.update_cue("c", {}).retry_safe
    assert routes.delete_cue("c").done_on_repeat == {404}
    assert not routes.create_cue(
        "n",
        transport="worker",
        payload=None,
        schedule=None,
        description=None,
        retry=None,
        callback=None,
    ).retry_safe
    assert not routes.claim("e", worker_id="w").retry_safe
    assert routes.worker_heartbeat("w", ["t"]).json == {"worker_id": "w", "handlers": ["t"]}


def test_call_content_is_json_bytes() -> None:
    assert routes.get_cue("c").content() is None
    assert routes.register("a@b.c").content() == b'{"email":"a@b.c"}'


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "invalid_api_key", AuthenticationError),
        (403, "not_execution_owner", Forbidden),
        (404, "cue_not_found", NotFound),
        (409, "claim_failed", ClaimFailed),
        (409, "outcome_already_recorded", Conflict),
        (413, "payload_too_large", PayloadTooLarge),
        (422, "validation_error", ValidationError),
        (500, "internal_error", ServerError),
        (503, "unavailable", ServerError),
        (418, "teapot", CueAPIError),
    ],
)
def test_error_bodies_map_to_the_tree(status: int, code: str, cls: type[CueAPIError]) -> None:
    with pytest.raises(cls) as info:
        routes.parse_answer(status, httpx.Headers(), _err(status, code))
    assert type(info.value) is cls
    assert (info.value.status, info.value.code) == (status, code)


def test_validation_error_keeps_field() -> None:
    with pytest.raises(ValidationError) as info:
        routes.parse_answer(422, httpx.Headers(), _err(422, "validation_error", field="fires[2]"))
    assert info.value.field == "fires[2]"
    assert "fires[2]" in str(info.value)


def test_rate_limited_reads_retry_after() -> None:
    headers = httpx.Headers({"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        routes.parse_answer(429, headers, _err(429, "rate_limited"))
    assert info.value.retry_after == 7.0


def test_error_without_json_body() -> None:
    with pytest.raises(ServerError) as info:
        routes.parse_answer(502, httpx.Headers(), b"<html>bad gateway</html>")
    assert info.value.code == "http_error"


def test_success_answers() -> None:
    assert routes.parse_answer(200, httpx.Headers(), b'{"a": 1}') == {"a": 1}
    assert routes.parse_answer(204, httpx.Headers(), b"") is None
    assert routes.parse_answer(200, httpx.Headers(), b" \r\n\t") is None  # blank: no body
    with pytest.raises(CueAPIError) as info:
        routes.parse_answer(200, httpx.Headers(), b"not json")
    assert info.value.code == "invalid_response"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("nan", None),
        ("soon", None),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),  # an HTTP date, 40 s after `now`
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert routes.parse_retry_after(value, now=60.0) == expected


def test_item_error_from_a_batch_answer() -> None:
    err = routes.item_error(
        {
            "execution_id": "e",
            "error": {"code": "outcome_already_recorded", "message": "x", "status": 409},
        }
    )
    assert isinstance(err, Conflict) and err.code == "outcome_already_recorded"
    assert isinstance(routes.item_error({"execution_id": "e", "error": "?"}), CueAPIError)
