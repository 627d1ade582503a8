"""The `outcome.reply` extension: an outcome that fires its reply, both in one
transaction (on every backend, over real HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.server.conftest import Api, error_of

TOKEN = "{reply_execution_id}"


def _claimed(api: Api, worker: str = "w1") -> tuple[dict[str, Any], str]:
    """A request cue and a reply cue; one request fired and claimed by `worker`."""
    requests = api.cue(payload={"task": "req"})
    replies = api.cue(payload={"task": "rep"})
    eid = api.fire(requests["id"], payload_override={"n": 1})["id"]
    assert api.claim(worker, task="req").json()["execution_id"] == eid
    return replies, eid


def _settle(api: Api, eid: str, body: dict[str, Any], worker: str = "w1") -> Any:
    return api.http.post(
        f"/v1/executions/{eid}/outcome", json=body, headers={"X-Worker-Id": worker}
    )


def test_listed_in_info(api: Api) -> None:
    assert "outcome.reply" in api.http.get("/v1/info").json()["extensions"]


def test_the_outcome_names_the_reply_it_fired(api: Api) -> None:
    replies, eid = _claimed(api)
    answer = _settle(
        api,
        eid,
        {
            "success": True,
            "result": f"replied as {TOKEN}",
            "metadata": {"cuemsg": {"reply_execution_id": TOKEN, "n": 1}},
            "reply": {
                "cue_id": replies["id"],
                "payload_override": {"answer": 2},
                "idempotency_key": "r1",
            },
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    reply_id = body["reply"]["id"]
    assert body["outcome_state"] == "success" and body["reply"]["status"] == "pending"
    outcome = api.execution(eid)["outcome"]
    assert outcome["result"] == f"replied as {reply_id}"
    assert outcome["metadata"] == {"cuemsg": {"reply_execution_id": reply_id, "n": 1}}
    reply = api.execution(reply_id)
    assert reply["payload"] == {"task": "rep", "answer": 2}
    # The reply is claimable at once (a parked claim on it would have been woken).
    assert api.claim("w2", task="rep").json()["execution_id"] == reply_id


def test_an_error_outcome_fires_its_reply_too(api: Api) -> None:
    replies, eid = _claimed(api)
    body = _settle(
        api,
        eid,
        {"success": False, "error": f"error reply {TOKEN}", "reply": {"cue_id": replies["id"]}},
    ).json()
    assert body["outcome_state"] == "failed"
    assert api.execution(eid)["outcome"]["error"] == f"error reply {body['reply']['id']}"


def test_a_refused_outcome_fires_nothing(api: Api) -> None:
    replies, eid = _claimed(api)
    reply = {"cue_id": replies["id"], "idempotency_key": "r1"}
    error_of(
        _settle(api, eid, {"success": True, "reply": reply}, worker="thief"),
        403,
        "not_execution_owner",
    )
    assert api.http.get("/v1/executions", params={"cue_id": replies["id"]}).json()["total"] == 0
    assert _settle(api, eid, {"success": True, "reply": reply}).status_code == 200
    error_of(_settle(api, eid, {"success": True, "reply": reply}), 409, "outcome_already_recorded")
    assert api.http.get("/v1/executions", params={"cue_id": replies["id"]}).json()["total"] == 1


def test_a_reply_to_an_unknown_cue_records_no_outcome(api: Api) -> None:
    _, eid = _claimed(api)
    err = error_of(
        _settle(api, eid, {"success": True, "reply": {"cue_id": "cue_nothere0000"}}),
        404,
        "cue_not_found",
    )
    assert err["field"] == "reply.cue_id"
    assert api.execution(eid)["status"] == "delivering"


def test_a_bad_reply_names_its_field(api: Api) -> None:
    replies, eid = _claimed(api)
    err = error_of(
        _settle(api, eid, {"success": True, "reply": {"cue_id": replies["id"], "colour": 1}}),
        422,
        "validation_error",
    )
    assert err["field"].startswith("reply")
    err = error_of(
        _settle(api, eid, {"success": True, "reply": {"payload_override": {}}}),
        422,
        "validation_error",
    )
    assert "cue_id" in err["field"] or "cue_id" in err["message"]
    assert api.execution(eid)["status"] == "delivering"


def test_extensions_off_refuses_the_reply_field(api_on: Callable[..., Api]) -> None:
    api = api_on(extensions=False)
    replies, eid = _claimed_plain(api)
    err = error_of(
        _settle(api, eid, {"success": True, "reply": {"cue_id": replies["id"]}}),
        422,
        "validation_error",
    )
    assert err["field"] == "reply"
    assert api.execution(eid)["status"] == "delivering"


def _claimed_plain(api: Api) -> tuple[dict[str, Any], str]:
    requests = api.cue(payload={"task": "req"})
    replies = api.cue(payload={"task": "rep"})
    eid = api.fire(requests["id"])["id"]
    api.http.post(f"/v1/executions/{eid}/claim", json={"worker_id": "w1"}).raise_for_status()
    return replies, eid
