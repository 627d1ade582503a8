"""The `executions.release` extension: a worker hands claimed executions back,
pending again at once, the attempt not counted (on every backend, over real HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from cuemsg.testing import RunningServer
from tests.server.conftest import Api, error_of


def release(api: Api, worker: str, *ids: str) -> httpx.Response:
    return api.http.post(
        "/v1/executions/release", json={"worker_id": worker, "execution_ids": list(ids)}
    )


def test_listed_in_info_and_openapi(api: Api) -> None:
    assert "executions.release" in api.http.get("/v1/info").json()["extensions"]
    doc = api.http.get("/openapi.json").json()
    assert "post" in doc["paths"]["/v1/executions/release"]


def test_released_executions_are_pending_again_and_claimed_in_order(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    ids = [api.fire(cue["id"], payload_override={"n": n})["id"] for n in range(3)]
    claimed = api.claim("w1", task="t", limit=3).json()["executions"]
    assert [c["execution_id"] for c in claimed] == ids
    answer = release(api, "w1", ids[1], ids[2])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "results": [
            {"execution_id": ids[1], "released": True},
            {"execution_id": ids[2], "released": True},
        ]
    }
    record = api.execution(ids[1])
    assert record["status"] == "pending" and record["attempts"] == 0
    assert api.execution(ids[0])["status"] == "delivering"
    again = api.claim("w2", task="t", limit=5).json()["executions"]
    assert [c["execution_id"] for c in again] == ids[1:]
    assert api.execution(ids[1])["attempts"] == 1


def test_a_release_does_not_count_against_max_attempts(api: Api) -> None:
    cue = api.cue(payload={"task": "t"}, retry={"max_attempts": 1})
    eid = api.fire(cue["id"])["id"]
    for _ in range(3):
        assert api.claim("w1", task="t").json()["execution_id"] == eid
        assert release(api, "w1", eid).json()["results"][0]["released"] is True
    assert api.execution(eid)["status"] == "pending"


def test_a_release_wakes_a_parked_claim(api: Api, srv: RunningServer) -> None:
    import threading

    cue = api.cue(payload={"task": "t"})
    eid = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == eid
    got: list[Any] = []
    other = Api(srv.base_url, api.key)
    parked = threading.Thread(target=lambda: got.append(other.claim("w2", task="t", wait=20)))
    parked.start()
    try:
        assert release(api, "w1", eid).status_code == 200
        parked.join(30)
    finally:
        other.close()
    assert got and got[0].json()["execution_id"] == eid


def test_each_item_answers_on_its_own(api: Api) -> None:
    cue = api.cue(payload={"task": "t"})
    mine, theirs, pending = (api.fire(cue["id"])["id"] for _ in range(3))
    assert api.claim("w1", task="t").json()["execution_id"] == mine
    assert api.claim("w2", task="t").json()["execution_id"] == theirs
    done = api.http.post(
        f"/v1/executions/{mine}/outcome", headers={"X-Worker-Id": "w1"}, json={"success": True}
    )
    assert done.status_code == 200
    mine2 = api.claim("w1", task="t").json()["execution_id"]
    assert mine2 == pending
    results = release(api, "w1", theirs, mine, "exec_unknown", mine2).json()["results"]
    assert [r["execution_id"] for r in results] == [theirs, mine, "exec_unknown", mine2]
    codes = [(r["released"], r.get("error", {}).get("code")) for r in results]
    assert codes == [
        (False, "not_execution_owner"),  # another worker holds it
        (False, "execution_not_claiming"),  # settled already: not delivering
        (False, "execution_not_found"),
        (True, None),
    ]
    assert [r.get("error", {}).get("status") for r in results] == [403, 409, 404, None]
    assert api.execution(theirs)["status"] == "delivering"
    assert api.execution(mine)["status"] == "success"


def test_bad_bodies_name_their_field(api: Api) -> None:
    err = error_of(
        api.http.post("/v1/executions/release", json={"worker_id": "w", "execution_ids": []}),
        422,
        "validation_error",
    )
    assert err["field"] == "execution_ids"
    err = error_of(
        api.http.post("/v1/executions/release", json={"execution_ids": ["x"]}),
        422,
        "validation_error",
    )
    assert err["field"] == "worker_id"


def test_another_tenant_cannot_release(api_factory: Callable[[], Api]) -> None:
    api, stranger = api_factory(), api_factory()
    cue = api.cue(payload={"task": "t"})
    eid = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == eid
    result = release(stranger, "w1", eid).json()["results"][0]
    assert result["error"]["code"] == "execution_not_found"
    assert api.execution(eid)["status"] == "delivering"


def test_extension_off_has_no_release(
    shared_server: Callable[..., RunningServer], api_on: Callable[..., Api]
) -> None:
    api = api_on(extensions=False)
    # The path then reads as GET /v1/executions/{id}: a POST there is 405.
    error_of(release(api, "w1", "x"), 405, "method_not_allowed")
    srv = shared_server(extensions=False)
    assert "/v1/executions/release" not in httpx.get(f"{srv.base_url}/openapi.json").json()["paths"]


def test_the_feed_shows_a_release_as_the_worker_letting_go(api: Api) -> None:
    from tests.server.test_events import replay

    cue = api.cue(payload={"task": "t"})
    eid = api.fire(cue["id"])["id"]
    assert api.claim("w1", task="t").json()["execution_id"] == eid
    assert release(api, "w1", eid).json()["results"][0]["released"] is True
    assert api.claim("w2", task="t").json()["execution_id"] == eid
    mine = [
        e
        for e in replay(str(api.http.base_url).rstrip("/"), api.key)
        if e.data["execution_id"] == eid
    ]
    assert [e.type for e in mine] == ["fired", "claimed", "heartbeat_lost", "claimed"]
    # The released claim is kept with its own attempt, and the next is attempt 1 again.
    assert mine[1].data["worker_id"] == "w1" and mine[1].data["attempt"] == 1
    assert mine[2].data["worker_id"] == "w1" and mine[2].data["attempt"] == 1
    assert mine[3].data["worker_id"] == "w2" and mine[3].data["attempt"] == 1
