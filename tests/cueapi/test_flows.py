"""The multi-step flows, driven by hand with a fake clock: pure, no network.

These check decisions a live server makes slow to observe (a wait longer
than the server's 30 s bound, the pause schedule of the polling path); what
the flows do against a real server is in test_integration.py.
"""

from __future__ import annotations

from typing import Any

import httpx

from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi._retry import RetryPolicy
from cuemsg.cueapi._routes import Send, Sleep

CLAIM_FAILED = httpx.Response(409, json={"error": {"code": "claim_failed", "message": "none"}})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(extensions: frozenset[str] | None) -> flows.FlowState:
    st = flows.FlowState(policy=RetryPolicy(max_retries=0), use_extensions=True)
    st.extensions = extensions
    return st


def _run(flow: Any, answer: Any, clock: Clock) -> tuple[Any, list[Any]]:
    """Answer every Send with `answer(step)`; a Send advances the clock by its wait."""
    steps: list[Any] = []
    value: Any = None
    while True:
        try:
            step = flow.send(value)
        except StopIteration as stop:
            return stop.value, steps
        steps.append(step)
        value = None
        if isinstance(step, Send):
            clock.now += step.call.wait
            value = answer(step)
        elif isinstance(step, Sleep):
            clock.now += step.seconds


def test_long_poll_past_the_server_bound_is_split_into_waits_of_30s() -> None:
    clock = Clock()
    st = _state(frozenset({"claim.task", "claim.wait", "claim.payload", "claim.many"}))
    flow = flows.claim_next(
        st, worker_id="w", task="t", agent=None, wait=70, limit=None, clock=clock
    )
    result, steps = _run(flow, lambda step: CLAIM_FAILED, clock)
    assert result.claimed is False and result.reason == "no_executions_for_task"
    waits = [s.call.json["wait"] for s in steps if isinstance(s, Send)]
    assert waits == [30, 30, 10]
    assert not any(isinstance(s, Sleep) for s in steps)  # a long-poll never sleeps client-side


def test_polling_path_backs_off_from_50ms_to_1s() -> None:
    clock = Clock()
    flow = flows.claim_next(
        _state(frozenset()), worker_id="w", task="t", agent=None, wait=5, limit=None, clock=clock
    )
    empty = httpx.Response(200, json={"executions": []})
    result, steps = _run(flow, lambda step: empty, clock)
    assert result.claimed is False and result.task == "t"
    pauses = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert pauses[:6] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert max(pauses) == 1.0 and sum(pauses) == 5
    paths = {s.call.path for s in steps if isinstance(s, Send)}
    assert paths == {"/v1/executions/claimable"}  # the hosted claim route takes no task


def test_no_wait_means_one_round() -> None:
    clock = Clock()
    st = _state(frozenset({"claim.task", "claim.payload"}))
    flow = flows.claim_next(
        st, worker_id="w", task=None, agent=None, wait=None, limit=None, clock=clock
    )
    result, steps = _run(flow, lambda step: CLAIM_FAILED, clock)
    assert result.claimed is False and result.reason == "no_executions"
    assert len(steps) == 1 and steps[0].call.json == {"worker_id": "w"}


def test_plain_path_moves_on_after_a_lost_race() -> None:
    clock = Clock()
    listing = httpx.Response(
        200,
        json={
            "executions": [
                {
                    "execution_id": "e1",
                    "cue_id": "c",
                    "task": "t",
                    "payload": {"task": "t"},
                    "attempt": 0,
                    "scheduled_for": "2030-01-01T00:00:00+00:00",
                },
                {
                    "execution_id": "e2",
                    "cue_id": "c",
                    "task": "t",
                    "payload": {"task": "t"},
                    "attempt": 2,
                    "scheduled_for": "2030-01-01T00:00:01+00:00",
                },
            ]
        },
    )

    def answer(step: Send) -> httpx.Response:
        if step.call.path.endswith("/claimable"):
            return listing
        if step.call.path == "/v1/executions/e1/claim":
            return CLAIM_FAILED  # another worker got it first
        return httpx.Response(
            200, json={"claimed": True, "execution_id": "e2", "lease_seconds": 60}
        )

    flow = flows.claim_next(
        _state(frozenset()),
        worker_id="w",
        task="t",
        agent=None,
        wait=None,
        limit=None,
        clock=clock,
    )
    result, _ = _run(flow, answer, clock)
    [got] = result.executions
    assert (got.execution_id, got.attempts, got.payload, got.cue_id) == (
        "e2",
        3,
        {"task": "t"},
        "c",
    )
