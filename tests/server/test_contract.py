"""Every route, status code and state transition of docs/cueapi.md, over real HTTP."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx

from cuemsg.testing import RunningServer
from tests.server.conftest import Api, error_of

# -- discovery and auth --------------------------------------------------------


def test_info_health_and_openapi_need_no_key(srv: RunningServer) -> None:
    info = httpx.get(f"{srv.base_url}/v1/info").json()
    assert info["version"]
    assert set(info["extensions"]) >= {
        "claim.task",
        "claim.wait",
        "claim.payload",
        "claim.many",
        "fire.batch",
        "outcome.batch",
    }
    assert httpx.get(f"{srv.base_url}/health").json()["status"] == "ok"
    assert httpx.get(f"{srv.base_url}/openapi.json").json()["openapi"].startswith("3.")


def test_register_makes_a_working_key(srv: RunningServer) -> None:
    answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a@example.com"})
    assert answer.status_code == 201
    body = answer.json()
    assert body["email"] == "a@example.com"
    key = body["api_key"]
    assert key.startswith("cue_sk_") and len(key) == len("cue_sk_") + 32
    listed = httpx.get(f"{srv.base_url}/v1/cues", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200


def test_register_rejects_a_bad_email(srv: RunningServer) -> None:
    answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "nope"})
    assert error_of(answer, 422, "validation_error")["field"] == "email"


def test_missing_or_bad_key_is_401(srv: RunningServer) -> None:
    error_of(httpx.get(f"{srv.base_url}/v1/cues"), 401, "invalid_api_key")
    bad = {"Authorization": "Bearer cue_sk_" + "0" * 32}
    error_of(httpx.get(f"{srv.base_url}/v1/cues", headers=bad), 401, "invalid_api_key")
    basic = {"Authorization": "Basic abc"}
    error_of(httpx.get(f"{srv.base_url}/v1/cues", headers=basic), 401, "invalid_api_key")


def test_unknown_route_and_wrong_method(api: Api) -> None:
    error_of(api.http.get("/v1/nothing-here"), 404, "not_found")
    error_of(api.http.delete("/v1/executions/claimable"), 405, "method_not_allowed")


# -- cues ----------------------------------------------------------------------


def test_cue_lifecycle(api: Api) -> None:
    cue = api.cue(
        "planner",
        description="plans",
        payload={"task": "plan"},
        retry={"max_attempts": 5},
        schedule={"type": "recurring", "cron": "0 0 1 1 *", "timezone": "UTC"},
    )
    assert cue["id"].startswith("cue_") and len(cue["id"]) == 16
    assert cue["status"] == "active" and cue["transport"] == "worker"
    assert cue["retry"] == {"max_attempts": 5, "backoff_minutes": [1, 5, 15]}
    for key in ("next_run", "last_run", "run_count", "fired_count", "created_at", "updated_at"):
        assert key in cue
    assert api.http.get(f"/v1/cues/{cue['id']}").json() == cue

    listed = api.http.get("/v1/cues").json()
    assert listed["total"] == 1 and listed["cues"][0]["id"] == cue["id"]
    assert listed["limit"] == 50 and listed["offset"] == 0

    paused = api.http.patch(f"/v1/cues/{cue['id']}", json={"status": "paused"}).json()
    assert paused["status"] == "paused"
    assert api.http.get("/v1/cues", params={"status": "paused"}).json()["total"] == 1
    assert api.http.get("/v1/cues", params={"status": "active"}).json()["total"] == 0
    renamed = api.http.patch(f"/v1/cues/{cue['id']}", json={"name": "planner-2"}).json()
    assert renamed["name"] == "planner-2" and renamed["status"] == "paused"
    resumed = api.http.patch(f"/v1/cues/{cue['id']}", json={"status": "active"}).json()
    assert resumed["status"] == "active"

    assert api.http.delete(f"/v1/cues/{cue['id']}").status_code == 204
    error_of(api.http.get(f"/v1/cues/{cue['id']}"), 404, "cue_not_found")
    error_of(api.http.delete(f"/v1/cues/{cue['id']}"), 404, "cue_not_found")
    error_of(api.http.patch(f"/v1/cues/{cue['id']}", json={}), 404, "cue_not_found")


def test_cue_list_pages(api: Api) -> None:
    ids = [api.cue(f"c{i}")["id"] for i in range(5)]
    page = api.http.get("/v1/cues", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and [c["id"] for c in page["cues"]] == ids[2:4]
    error_of(api.http.get("/v1/cues", params={"limit": 0}), 422, "validation_error")
    error_of(api.http.get("/v1/cues", params={"offset": "x"}), 422, "validation_error")


def test_duplicate_cue_name_is_409_and_changes_nothing(api: Api) -> None:
    first = api.cue("same")
    error_of(
        api.http.post("/v1/cues", json={"name": "same", "transport": "worker"}),
        409,
        "cue_name_taken",
    )
    other = api.cue("other")
    error_of(
        api.http.patch(f"/v1/cues/{other['id']}", json={"name": "same"}), 409, "cue_name_taken"
    )
    assert api.http.get(f"/v1/cues/{other['id']}").json()["name"] == "other"
    assert api.http.get("/v1/cues").json()["total"] == 2
    assert api.http.get(f"/v1/cues/{first['id']}").json() == first


def test_cue_validation(api: Api) -> None:
    cases = [
        ({"transport": "worker"}, "name"),
        ({"name": "", "transport": "worker"}, "name"),
        ({"name": "x" * 256, "transport": "worker"}, "name"),
        ({"name": "w", "transport": "webhook"}, "callback.url"),
        ({"name": "w", "transport": "pigeon"}, "transport"),
        ({"name": "w", "transport": "worker", "retry": {"max_attempts": 11}}, "retry.max_attempts"),
        ({"name": "w", "transport": "worker", "payload": [1]}, "payload"),
        ({"name": "w", "transport": "worker", "schedule": {"type": "daily"}}, "schedule.type"),
        (
            {"name": "w", "transport": "worker", "schedule": {"type": "once", "at": "soon"}},
            "schedule.at",
        ),
        (
            {"name": "w", "transport": "worker", "schedule": {"type": "recurring", "cron": "* *"}},
            "schedule.cron",
        ),
    ]
    for body, field in cases:
        err = error_of(api.http.post("/v1/cues", json=body), 422, "validation_error")
        assert err["field"] == field, (body, err)
        assert field.split(".")[0] in err["message"]
    webhook = api.http.post(
        "/v1/cues",
        json={"name": "hook", "transport": "webhook", "callback": {"url": "https://x.test/h"}},
    )
    assert webhook.status_code == 201
    assert api.http.get("/v1/cues").json()["total"] == 1


def test_patch_validation_changes_nothing(api: Api) -> None:
    cue = api.cue("keep", payload={"task": "t"})
    err = error_of(
        api.http.patch(f"/v1/cues/{cue['id']}", json={"status": "gone"}), 422, "validation_error"
    )
    assert err["field"] == "status"
    assert api.http.get(f"/v1/cues/{cue['id']}").json() == cue


# -- fire ----------------------------------------------------------------------


def test_fire_merge_and_replace(api: Api) -> None:
    cue = api.cue(payload={"task": "t", "keep": 1, "over": "cue"})
    merged = api.fire(cue["id"], payload_override={"over": "fire", "message": "m"})
    assert merged["status"] == "pending" and merged["triggered_by"] == "manual_fire"
    assert merged["cue_id"] == cue["id"]
    assert api.execution(merged["id"])["payload"] == {
        "task": "t",
        "keep": 1,
        "over": "fire",
        "message": "m",
    }
    explicit = api.fire(cue["id"], payload_override={"over": "x"}, merge_strategy="merge")
    assert api.execution(explicit["id"])["payload"]["keep"] == 1
    replaced = api.fire(cue["id"], payload_override={"only": 1}, merge_strategy="replace")
    assert api.execution(replaced["id"])["payload"] == {"only": 1}
    plain = api.fire(cue["id"])
    assert api.execution(plain["id"])["payload"] == cue["payload"]
    # The override is stored on the execution, never on the cue.
    after = api.http.get(f"/v1/cues/{cue['id']}").json()
    assert after["payload"] == cue["payload"] and after["fired_count"] == 4


def test_fire_works_on_a_paused_cue(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    api.http.patch(f"/v1/cues/{cue['id']}", json={"status": "paused"})
    fired = api.fire(cue["id"], payload_override={"message": 1})
    assert fired["status"] == "pending"


def test_fire_send_at(api: Api) -> None:
    cue = api.cue(payload={"task": "later"})
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    now_fire = api.fire(cue["id"], send_at=past)
    scheduled = datetime.fromisoformat(now_fire["scheduled_for"])
    assert abs((scheduled - datetime.now(timezone.utc)).total_seconds()) < 60
    future = datetime.now(timezone.utc) + timedelta(seconds=0.6)
    later = api.fire(cue["id"], send_at=future.isoformat())
    assert datetime.fromisoformat(later["scheduled_for"]) == future
    ids = [
        e["execution_id"]
        for e in api.http.get("/v1/executions/claimable", params={"task": "later"}).json()[
            "executions"
        ]
    ]
    assert ids == [now_fire["id"]]
    # A waiting claim gets the scheduled one as soon as it comes due.
    assert api.claim(task="later").json()["execution_id"] == now_fire["id"]
    got = api.claim(task="later", wait=10)
    assert got.status_code == 200 and got.json()["execution_id"] == later["id"]
    assert time.time() >= future.timestamp()


def test_fire_idempotency(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    body = {"payload_override": {"message": "once"}, "idempotency_key": "msg-1"}
    first = api.fire(cue["id"], **body)
    again = api.fire(cue["id"], **body)
    assert again["id"] == first["id"]
    err = error_of(
        api.http.post(
            f"/v1/cues/{cue['id']}/fire",
            json={"payload_override": {"message": "other"}, "idempotency_key": "msg-1"},
        ),
        409,
        "idempotency_key_conflict",
    )
    assert "msg-1" in err["message"]
    listed = api.http.get("/v1/executions", params={"cue_id": cue["id"]}).json()
    assert listed["total"] == 1
    # Keys are scoped per cue.
    other = api.cue(payload={"task": "t"})
    assert api.fire(other["id"], **body)["id"] != first["id"]


def test_fire_validation_changes_nothing(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    url = f"/v1/cues/{cue['id']}/fire"
    cases = [
        ({"payload_overide": {}}, "payload_overide"),
        ({"merge_strategy": "deep"}, "merge_strategy"),
        ({"payload_override": "text"}, "payload_override"),
        ({"send_at": "tomorrow"}, "send_at"),
        ({"idempotency_key": "k" * 257}, "idempotency_key"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ]
    for body, field in cases:
        err = error_of(api.http.post(url, json=body), 422, "validation_error")
        assert err["field"] == field, (body, err)
    err = error_of(api.http.post(url, content=b"{not json"), 422, "validation_error")
    assert "JSON" in err["message"]
    error_of(api.http.post(url, json=[1, 2]), 422, "validation_error")
    error_of(api.http.post("/v1/cues/cue_doesnotexist/fire", json={}), 404, "cue_not_found")
    assert api.http.get("/v1/executions").json()["total"] == 0


def test_oversized_body_is_413_and_stores_nothing(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    big = {"payload_override": {"message": "x" * (1024 * 1024)}}
    err = error_of(api.http.post(f"/v1/cues/{cue['id']}/fire", json=big), 413, "payload_too_large")
    assert "1048576" in err["message"]

    def chunks():  # no Content-Length: the server must count while reading
        yield b'{"payload_override": {"message": "'
        for _ in range(1100):
            yield b"y" * 1024
        yield b'"}}'

    error_of(
        api.http.post(f"/v1/cues/{cue['id']}/fire", content=chunks()), 413, "payload_too_large"
    )
    assert api.http.get("/v1/executions").json()["total"] == 0


def test_fire_batch(api: Api) -> None:
    a = api.cue(payload={"task": "a"})
    b = api.cue(payload={"task": "b"})
    answer = api.http.post(
        "/v1/fire",
        json={
            "fires": [
                {"cue_id": a["id"], "payload_override": {"n": 1}},
                {"cue_id": b["id"], "payload_override": {"n": 2}, "idempotency_key": "k"},
                {"cue_id": a["id"], "payload_override": {"n": 3}, "merge_strategy": "replace"},
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    fired = answer.json()["executions"]
    assert [f["cue_id"] for f in fired] == [a["id"], b["id"], a["id"]]
    assert api.execution(fired[2]["id"])["payload"] == {"n": 3}
    # One bad item: the whole batch is refused, naming its index; nothing is stored.
    before = api.http.get("/v1/executions").json()["total"]
    err = error_of(
        api.http.post(
            "/v1/fire",
            json={"fires": [{"cue_id": a["id"]}, {"cue_id": b["id"], "merge_strategy": "nope"}]},
        ),
        422,
        "validation_error",
    )
    assert err["field"] == "fires[1].merge_strategy"
    err = error_of(
        api.http.post(
            "/v1/fire", json={"fires": [{"cue_id": a["id"]}, {"cue_id": "cue_missing00000"}]}
        ),
        404,
        "cue_not_found",
    )
    assert err["field"] == "fires[1].cue_id"
    err = error_of(
        api.http.post(
            "/v1/fire",
            json={
                "fires": [
                    {"cue_id": a["id"]},
                    {"cue_id": b["id"], "idempotency_key": "k", "payload_override": {"n": 9}},
                ]
            },
        ),
        409,
        "idempotency_key_conflict",
    )
    assert err["field"] == "fires[1].idempotency_key"
    error_of(api.http.post("/v1/fire", json={"fires": []}), 422, "validation_error")
    too_many = {"fires": [{"cue_id": a["id"]}] * 101}
    error_of(api.http.post("/v1/fire", json=too_many), 422, "validation_error")
    assert api.http.get("/v1/executions").json()["total"] == before


# -- claim, heartbeat, outcome ---------------------------------------------------


def test_claimable_filters_order_and_limit(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    ids = [
        api.fire(cue["id"], payload_override={"n": i, "agent": "ag" if i % 2 else "x"})["id"]
        for i in range(55)
    ]
    other = api.cue(payload={"task": "other"})
    api.fire(other["id"])
    listed = api.http.get("/v1/executions/claimable", params={"task": "t"}).json()["executions"]
    assert [e["execution_id"] for e in listed] == ids[:50]
    first = listed[0]
    assert first["cue_id"] == cue["id"] and first["cue_name"] == cue["name"]
    assert first["task"] == "t" and first["attempt"] == 0 and first["payload"]["n"] == 0
    by_agent = api.http.get("/v1/executions/claimable", params={"task": "t", "agent": "ag"}).json()[
        "executions"
    ]
    assert [e["execution_id"] for e in by_agent] == ids[1::2]
    # The filter applies before the 50-row window: the one 'other' is found.
    others = api.http.get("/v1/executions/claimable", params={"task": "other"}).json()
    assert len(others["executions"]) == 1


def test_claim_lifecycle_success(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    fired = api.fire(cue["id"], payload_override={"message": "hello"})
    eid = fired["id"]
    claimed = api.http.post(f"/v1/executions/{eid}/claim", json={"worker_id": "w1"})
    assert claimed.status_code == 200
    body = claimed.json()
    assert body["claimed"] is True and body["execution_id"] == eid
    assert body["lease_seconds"] > 0
    assert body["payload"] == {"task": "t", "message": "hello"} and body["attempts"] == 1
    record = api.execution(eid)
    assert record["status"] == "delivering" and record["claimed_by_worker"] == "w1"
    assert record["attempts"] == 1 and record["lease_expires_at"]
    # Claimed once: a second claim fails.
    error_of(
        api.http.post(f"/v1/executions/{eid}/claim", json={"worker_id": "w2"}), 409, "claim_failed"
    )
    # Heartbeat: owner ok, other worker 403, no header accepted.
    hb = api.http.post(f"/v1/executions/{eid}/heartbeat", headers={"X-Worker-Id": "w1"})
    assert hb.status_code == 200
    assert hb.json()["acknowledged"] is True and hb.json()["execution_id"] == eid
    assert hb.json()["lease_extended_until"]
    error_of(
        api.http.post(f"/v1/executions/{eid}/heartbeat", headers={"X-Worker-Id": "w2"}),
        403,
        "not_execution_owner",
    )
    assert api.http.post(f"/v1/executions/{eid}/heartbeat").status_code == 200
    # Outcome from another worker: 403, and nothing recorded.
    error_of(
        api.http.post(
            f"/v1/executions/{eid}/outcome", headers={"X-Worker-Id": "w2"}, json={"success": True}
        ),
        403,
        "not_execution_owner",
    )
    assert api.execution(eid)["outcome"] is None
    done = api.http.post(
        f"/v1/executions/{eid}/outcome",
        headers={"X-Worker-Id": "w1"},
        json={"success": True, "result": "ok", "metadata": {"k": 1}},
    )
    assert done.json() == {
        "execution_id": eid,
        "outcome_recorded": True,
        "outcome_state": "success",
    }
    record = api.execution(eid)
    assert record["status"] == "success"
    assert record["outcome"]["result"] == "ok" and record["outcome"]["metadata"] == {"k": 1}
    # Write-once.
    error_of(
        api.http.post(f"/v1/executions/{eid}/outcome", json={"success": False}),
        409,
        "outcome_already_recorded",
    )
    error_of(
        api.http.post(f"/v1/executions/{eid}/heartbeat", headers={"X-Worker-Id": "w1"}),
        409,
        "execution_not_claiming",
    )
    assert api.execution(eid)["outcome"]["success"] is True


def test_failure_outcome_is_terminal(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    eid = api.fire(cue["id"])["id"]
    assert api.claim(task="t").json()["execution_id"] == eid
    answer = api.http.post(
        f"/v1/executions/{eid}/outcome", json={"success": False, "error": "boom"}
    )
    assert answer.json()["outcome_state"] == "failed"
    assert api.execution(eid)["outcome"]["error"] == "boom"
    error_of(api.claim(task="t"), 409, "claim_failed")
    assert api.http.get("/v1/executions", params={"status": "failed"}).json()["total"] == 1


def test_outcome_needs_a_claim_and_valid_body(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    eid = api.fire(cue["id"])["id"]
    error_of(
        api.http.post(f"/v1/executions/{eid}/outcome", json={"success": True}),
        409,
        "execution_not_claiming",
    )
    error_of(api.http.post(f"/v1/executions/{eid}/heartbeat"), 409, "execution_not_claiming")
    api.claim(task="t")
    err = error_of(
        api.http.post(
            f"/v1/executions/{eid}/outcome", json={"success": True, "result": "r" * 2001}
        ),
        422,
        "validation_error",
    )
    assert err["field"] == "result"
    err = error_of(api.http.post(f"/v1/executions/{eid}/outcome", json={}), 422, "validation_error")
    assert err["field"] == "success"
    assert api.execution(eid)["status"] == "delivering"


def test_bad_execution_ids_are_404(api: Api) -> None:
    for path in ("/v1/executions/nope", "/v1/executions/00000000-0000-0000-0000-000000000000"):
        error_of(api.http.get(path), 404, "execution_not_found")
        error_of(
            api.http.post(f"{path}/claim", json={"worker_id": "w"}), 404, "execution_not_found"
        )
        error_of(api.http.post(f"{path}/heartbeat"), 404, "execution_not_found")
        error_of(
            api.http.post(f"{path}/outcome", json={"success": True}), 404, "execution_not_found"
        )


def test_claim_next_plain_and_extended(api: Api) -> None:
    a = api.cue(payload={"task": "a"})
    b = api.cue(payload={"task": "b"})
    first = api.fire(a["id"])["id"]
    second = api.fire(b["id"], payload_override={"agent": "bond"})["id"]
    third = api.fire(b["id"])["id"]
    # No filter: the oldest of the tenant.
    assert api.claim().json()["execution_id"] == first
    # claim.task / agent filters.
    by_agent = api.claim(task="b", agent="bond").json()
    assert by_agent["execution_id"] == second and by_agent["task"] == "b"
    error_of(api.claim(task="a"), 409, "claim_failed")
    # claim.many
    more = [api.fire(a["id"], payload_override={"n": i})["id"] for i in range(3)]
    many = api.claim(task="a", limit=5).json()
    assert many["claimed"] is True
    assert [e["execution_id"] for e in many["executions"]] == more
    assert all(e["payload"]["task"] == "a" for e in many["executions"])
    assert api.claim(task="b", limit=2).json()["executions"][0]["execution_id"] == third
    error_of(api.claim(), 409, "claim_failed")


def test_claim_validation(api: Api) -> None:
    cases = [
        ({}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "w", "wait": 31}, "wait"),
        ({"worker_id": "w", "wait": -1}, "wait"),
        ({"worker_id": "w", "limit": 0}, "limit"),
        ({"worker_id": "w", "limit": 101}, "limit"),
        ({"worker_id": "w", "tsak": "x"}, "tsak"),
    ]
    for body, field in cases:
        err = error_of(api.http.post("/v1/executions/claim", json=body), 422, "validation_error")
        assert err["field"] == field, (body, err)
    err = error_of(
        api.http.post("/v1/executions/x/claim", json={"worker_id": "w", "task": "t"}),
        422,
        "validation_error",
    )
    assert err["field"] == "task"


def test_outcome_batch(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    ids = [api.fire(cue["id"])["id"] for _ in range(3)]
    api.claim("w1", task="t", limit=2)
    answer = api.http.post(
        "/v1/executions/outcomes",
        headers={"X-Worker-Id": "w1"},
        json={
            "outcomes": [
                {"execution_id": ids[0], "success": True},
                {"execution_id": ids[2], "success": True},
                {"execution_id": ids[1], "success": False, "error": "no"},
                {"execution_id": ids[0], "success": True},
            ]
        },
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert results[0]["outcome_recorded"] is True
    assert results[1]["error"]["code"] == "execution_not_claiming"
    assert results[2]["outcome_state"] == "failed"
    assert results[3]["error"]["code"] == "outcome_already_recorded"
    assert [r["execution_id"] for r in results] == [ids[0], ids[2], ids[1], ids[0]]


def test_list_executions_filters(api: Api) -> None:
    a = api.cue(payload={"task": "a"})
    b = api.cue(payload={"task": "b"})
    for _ in range(3):
        api.fire(a["id"])
    api.fire(b["id"])
    api.claim(task="b")
    by_cue = api.http.get("/v1/executions", params={"cue_id": a["id"]}).json()
    assert by_cue["total"] == 3 and all(e["cue_id"] == a["id"] for e in by_cue["executions"])
    delivering = api.http.get("/v1/executions", params={"status": "delivering"}).json()
    assert delivering["total"] == 1 and delivering["executions"][0]["cue_id"] == b["id"]
    page = api.http.get("/v1/executions", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 4 and len(page["executions"]) == 2
    err = error_of(
        api.http.get("/v1/executions", params={"status": "weird"}), 422, "validation_error"
    )
    assert err["field"] == "status"


def test_list_executions_cursor(api: Api) -> None:
    cue = api.cue(payload={"task": "paged"})
    ids = [api.fire(cue["id"])["id"] for _ in range(3)]
    first = api.http.get("/v1/executions", params={"cue_id": cue["id"], "limit": 2}).json()
    assert [e["id"] for e in first["executions"]] == [ids[2], ids[1]]
    rest = api.http.get(
        "/v1/executions", params={"cue_id": cue["id"], "limit": 2, "before": ids[1]}
    ).json()
    assert [e["id"] for e in rest["executions"]] == [ids[0]] and rest["total"] == 1
    err = error_of(
        api.http.get("/v1/executions", params={"before": "nope"}), 422, "validation_error"
    )
    assert err["field"] == "before" and "nope" in err["message"]
    err = error_of(api.http.get("/v1/executions", params={"before": ""}), 422, "validation_error")
    assert err["field"] == "before"


def test_worker_heartbeat_and_list(api: Api) -> None:
    answer = api.http.post("/v1/worker/heartbeat", json={"worker_id": "w9", "handlers": ["t"]})
    assert answer.status_code == 200
    assert answer.json()["acknowledged"] is True and answer.json()["server_time"]
    workers = api.http.get("/v1/workers").json()["workers"]
    assert [(w["worker_id"], w["handlers"]) for w in workers] == [("w9", ["t"])]
    err = error_of(
        api.http.post("/v1/worker/heartbeat", json={"handlers": []}), 422, "validation_error"
    )
    assert err["field"] == "worker_id"
