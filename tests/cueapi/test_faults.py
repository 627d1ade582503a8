"""Faults our server cannot produce on demand, provoked with `httpx.MockTransport`.

MockTransport is used here, and only here, to script failures the embedded
server never gives (a dropped connection, a refused connect, a 429 with
Retry-After, a 503, a timeout, a server without /v1/info); every success in
these scripts follows the shapes the real server answers with
(test_integration.py checks those against it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cuemsg.cueapi import (
    AsyncCueClient,
    CueClient,
    RateLimited,
    ServerError,
    TransportError,
    TransportTimeout,
)

Handler = Callable[[httpx.Request], httpx.Response]

CUE_ID = "cue_abcdefabcdef"
CUE: dict[str, Any] = {"id": CUE_ID, "name": "n", "status": "active", "payload": {}}
FIRE = {"id": "e-1", "cue_id": CUE_ID, "status": "pending", "scheduled_for": "2030-01-01"}


def _script(*answers: Any) -> tuple[Handler, list[httpx.Request]]:
    """A handler that answers (or raises) each scripted item in turn and records requests."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    return handle, seen


def _client(handler: Handler, **kwargs: Any) -> CueClient:
    kwargs.setdefault("use_extensions", False)
    return CueClient(
        "cue_sk_test", "http://cueapi.test", transport=httpx.MockTransport(handler), **kwargs
    )


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": code, "status": status}}
    return httpx.Response(status, json=body, headers=headers)


def test_dropped_connection_on_a_get_is_retried() -> None:
    # Fault: the server closes the connection without answering.
    handler, seen = _script(httpx.RemoteProtocolError("dropped"), httpx.Response(200, json=CUE))
    with _client(handler) as c:
        assert c.cues.get(CUE_ID).id == CUE_ID
        assert c.request_count == 2
    assert seen[0].headers["authorization"] == "Bearer cue_sk_test"


def test_refused_connect_is_retried_even_for_an_unkeyed_fire() -> None:
    # Fault: connection refused: the request never left, so repeating it is safe.
    handler, seen = _script(httpx.ConnectError("refused"), httpx.Response(200, json=FIRE))
    with _client(handler) as c:
        assert c.cues.fire(CUE_ID, {"a": 1}).id == "e-1"
    assert len(seen) == 2


def test_lost_answer_to_an_unkeyed_fire_is_not_retried() -> None:
    # Fault: the connection drops after the fire was sent: it may have been made.
    handler, seen = _script(httpx.ReadError("reset"))
    with _client(handler) as c, pytest.raises(TransportError) as info:
        c.cues.fire(CUE_ID, {"a": 1})
    assert len(seen) == 1 and isinstance(info.value.__cause__, httpx.ReadError)


def test_lost_answer_to_a_keyed_fire_is_retried_with_the_same_body() -> None:
    # Fault: the connection drops after a keyed fire: the key makes the repeat safe.
    handler, seen = _script(httpx.ReadError("reset"), httpx.Response(200, json=FIRE))
    with _client(handler) as c:
        assert c.cues.fire(CUE_ID, {"a": 1}, idempotency_key="m-1").id == "e-1"
    assert len(seen) == 2 and seen[0].content == seen[1].content
    assert b'"idempotency_key":"m-1"' in seen[1].content


def test_429_waits_retry_after_then_succeeds() -> None:
    # Fault: the embedded server only rate-limits when configured, and its Retry-After
    # is whole seconds; a scripted 0.2 s keeps the test short.
    handler, seen = _script(
        _error(429, "rate_limited", {"Retry-After": "0.2"}), httpx.Response(201, json=CUE)
    )
    with _client(handler) as c:
        started = time.monotonic()
        assert c.cues.create("n").id == CUE_ID  # a POST: a 429 was not processed
        assert time.monotonic() - started >= 0.2
    assert len(seen) == 2


def test_429_with_a_long_retry_after_goes_to_the_caller() -> None:
    # Fault: a hosted-only answer: the key is out of requests for a long while.
    handler, seen = _script(_error(429, "rate_limited", {"Retry-After": "3600"}))
    with _client(handler) as c, pytest.raises(RateLimited) as info:
        c.cues.list()
    assert info.value.retry_after == 3600 and len(seen) == 1


def test_503_then_success_on_a_get() -> None:
    # Fault: our server never answers 503.
    handler, seen = _script(_error(503, "unavailable"), httpx.Response(200, json=CUE))
    with _client(handler) as c:
        assert c.cues.get(CUE_ID) is not None
    assert len(seen) == 2


def test_503_on_a_claim_is_not_retried() -> None:
    # Fault: a 5xx on a claim: it may have taken a lease, so it is not repeated.
    handler, seen = _script(_error(503, "unavailable"))
    with _client(handler) as c, pytest.raises(ServerError):
        c.executions.claim_next(worker_id="w")
    assert len(seen) == 1


def test_retries_are_bounded_by_max_retries() -> None:
    # Fault: a server that keeps failing.
    handler, seen = _script(*[_error(500, "boom")] * 3)
    with _client(handler, max_retries=2) as c, pytest.raises(ServerError):
        c.cues.get(CUE_ID)
    assert len(seen) == 3 and c.request_count == 3
    handler, seen = _script(_error(500, "boom"))
    with _client(handler, max_retries=0) as c, pytest.raises(ServerError):
        c.cues.get(CUE_ID)
    assert len(seen) == 1


def test_read_timeout_is_a_transport_timeout() -> None:
    # Fault: the answer never comes (a claim is not repeated after it).
    handler, _ = _script(httpx.ReadTimeout("slow"))
    with _client(handler) as c, pytest.raises(TransportTimeout) as info:
        c.executions.claim("e-1", worker_id="w")
    assert isinstance(info.value, TimeoutError)


def test_server_without_info_gets_the_plain_contract() -> None:
    # Fault: a hosted-only answer: a service without /v1/info.
    handler, seen = _script(
        _error(404, "not_found"),
        httpx.Response(200, json={"executions": []}),
    )
    with _client(handler, use_extensions=True) as c:
        result = c.executions.claim_next(worker_id="w", task="t")
        assert result.claimed is False and c.extensions == frozenset()
    assert [r.url.path for r in seen] == ["/v1/info", "/v1/executions/claimable"]


@pytest.mark.anyio
async def test_async_dropped_connection_and_429() -> None:
    # Faults: a dropped connection, then a 429 with Retry-After (see the sync tests).
    handler, seen = _script(
        httpx.RemoteProtocolError("dropped"),
        _error(429, "rate_limited", {"Retry-After": "0.05"}),
        httpx.Response(200, json=CUE),
    )
    async with AsyncCueClient(
        "cue_sk_test",
        "http://cueapi.test",
        transport=httpx.MockTransport(handler),
        use_extensions=False,
    ) as c:
        assert (await c.cues.get(CUE_ID)).id == CUE_ID
        assert c.request_count == 3
    assert len(seen) == 3


@pytest.mark.anyio
async def test_async_lost_answer_to_an_unkeyed_fire_is_not_retried() -> None:
    # Fault: the connection drops after the fire was sent.
    handler, seen = _script(httpx.ReadError("reset"))
    async with AsyncCueClient(
        "cue_sk_test",
        "http://cueapi.test",
        transport=httpx.MockTransport(handler),
        use_extensions=False,
    ) as c:
        with pytest.raises(TransportError):
            await c.cues.fire(CUE_ID)
    assert len(seen) == 1
