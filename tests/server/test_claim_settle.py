"""The `claim.settle` extension: a claim that first records the outcomes it carries
(on every backend, over real HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cuemsg.server.handlers import claims
from tests.server.conftest import Api, error_of


def test_listed_in_info(api: Api) -> None:
    assert "claim.settle" in api.http.get("/v1/info").json()["extensions"]


def test_a_claim_settles_then_claims(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    first, second = (api.fire(cue["id"], payload_override={"n": n})["id"] for n in (1, 2))
    assert api.claim("w1", task="t").json()["execution_id"] == first
    answer = api.claim(
        "w1", task="t", settle=[{"execution_id": first, "success": True, "result": "handled"}]
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["claimed"] is True and [e["execution_id"] for e in body["executions"]] == [second]
    assert body["settled"] == [
        {"execution_id": first, "outcome_recorded": True, "outcome_state": "success"}
    ]
    assert api.execution(first)["outcome"]["result"] == "handled"
    # Nothing claimable: the outcomes are still recorded, and the answer says so (not 409).
    answer = api.claim(
        "w1", task="t", wait=0.1, settle=[{"execution_id": second, "success": False, "error": "no"}]
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "claimed": False,
        "executions": [],
        "settled": [{"execution_id": second, "outcome_recorded": True, "outcome_state": "failed"}],
    }
    assert api.execution(second)["status"] == "failed"


def test_each_carried_outcome_stands_on_its_own(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    mine, theirs, waiting = (api.fire(cue["id"])["id"] for _ in range(3))
    assert api.claim("w1", task="t").json()["execution_id"] == mine
    assert api.claim("w2", task="t").json()["execution_id"] == theirs
    body = api.claim(
        "w1",
        task="t",
        settle=[
            {"execution_id": theirs, "success": True},  # another worker's lease: 403
            {"execution_id": mine, "success": True},
        ],
    ).json()
    assert body["settled"][0]["error"]["code"] == "not_execution_owner"
    assert body["settled"][1]["outcome_state"] == "success"
    assert [e["execution_id"] for e in body["executions"]] == [waiting]
    assert api.execution(theirs)["status"] == "delivering"


def test_bad_settle_items_name_their_field(api: Api) -> None:
    err = error_of(api.claim("w1", settle=[]), 422, "validation_error")
    assert err["field"] == "settle"
    err = error_of(api.claim("w1", settle=[{"execution_id": "x"}]), 422, "validation_error")
    assert err["field"].startswith("settle")


def test_extensions_off_refuses_settle(api_on: Callable[..., Api]) -> None:
    api = api_on(extensions=False)
    err = error_of(
        api.claim("w1", settle=[{"execution_id": "x", "success": True}]), 422, "validation_error"
    )
    assert err["field"] == "settle"


def test_a_refused_outcome_with_nothing_claimable_is_answered(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    mine = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == mine
    answer = api.claim(
        "w1",
        task="t",
        settle=[
            {"execution_id": "no-such-execution", "success": True},
            {"execution_id": mine, "success": True},
        ],
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["claimed"] is False and body["executions"] == []
    assert body["settled"][0]["error"]["code"] == "execution_not_found"
    assert body["settled"][1] == {
        "execution_id": mine,
        "outcome_recorded": True,
        "outcome_state": "success",
    }
    assert api.execution(mine)["status"] == "success"


def _parked(api: Api, **body: Any) -> tuple[threading.Thread, list[httpx.Response]]:
    """A claim sent from another thread (it parks); its answer lands in the list."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(api.claim("w1", **body)))
    thread.start()
    return thread, answers


def _status_soon(api: Api, execution_id: str, status: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if api.execution(execution_id)["status"] == status:
            return True
        time.sleep(0.02)
    return False


def test_a_parked_claims_outcomes_ride_on_the_fire_that_hands_it_work(
    api: Api, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a claim that parks holds its outcomes for the next fire, which records
    them in its own transaction; the claim's answer says they were recorded. On PostgreSQL
    the claim records them at once (`settle_rides` is False), then is handed the work."""
    monkeypatch.setattr(claims, "SETTLE_RIDE", 30.0)  # the fire, not the window, decides
    cue = api.cue(payload={"task": "t"})
    first = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == first
    thread, answers = _parked(
        api, task="t", wait=20, settle=[{"execution_id": first, "success": True}]
    )
    time.sleep(0.3)
    if backend == "sqlite":
        assert thread.is_alive() and api.execution(first)["status"] == "delivering"
    else:
        assert _status_soon(api, first, "success")
    second = api.fire(cue["id"])["id"]
    thread.join(10)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["claimed"] is True and [e["execution_id"] for e in body["executions"]] == [second]
    assert body["settled"] == [
        {"execution_id": first, "outcome_recorded": True, "outcome_state": "success"}
    ]
    assert api.execution(first)["status"] == "success"
    assert api.execution(second)["status"] == "delivering"


def test_outcomes_no_fire_takes_are_recorded_when_the_window_closes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no fire in `SETTLE_RIDE`, the outcomes are recorded on their own while the
    claim goes on waiting; its answer at the end says so."""
    monkeypatch.setattr(claims, "SETTLE_RIDE", 0.2)
    cue = api.cue(payload={"task": "t"})
    first = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == first
    thread, answers = _parked(
        api, task="t", wait=3, settle=[{"execution_id": first, "success": False, "error": "x"}]
    )
    assert _status_soon(api, first, "failed")
    assert thread.is_alive()  # recorded while the claim still waits
    thread.join(10)
    assert [a.json() for a in answers] == [
        {
            "claimed": False,
            "executions": [],
            "settled": [
                {"execution_id": first, "outcome_recorded": True, "outcome_state": "failed"}
            ],
        }
    ]


def test_work_already_waiting_is_claimed_with_the_outcomes_at_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "SETTLE_RIDE", 30.0)  # a ride would hold the answer 30 s
    cue = api.cue(payload={"task": "t"})
    first, second = (api.fire(cue["id"])["id"] for _ in range(2))
    assert api.claim("w1", task="t").json()["execution_id"] == first
    started = time.monotonic()
    answer = api.claim("w1", task="t", wait=20, settle=[{"execution_id": first, "success": True}])
    assert time.monotonic() - started < 10
    body = answer.json()
    assert [e["execution_id"] for e in body["executions"]] == [second]
    assert body["settled"][0]["outcome_state"] == "success"
