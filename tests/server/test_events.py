"""The event feed (`GET /v1/events`, extension `events.stream`) over real HTTP,
on each backend: every kind of event once per hand-off, resume by
`Last-Event-ID`, filters, tenant isolation and the errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cuemsg._events import FeedEvent, parse_sse
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox
from cuemsg.server.feed import EVENT_TYPES
from cuemsg.testing import RunningServer
from tests.feedtail import Tail, by_execution
from tests.server.conftest import Api, error_of

# Short leases, a quick sweep and an unclaimed timeout: every event kind within seconds.
FAST = {"lease_seconds": 0.3, "unclaimed_timeout": 1.5}


def replay(base_url: str, key: str, after: int = 0, **params: Any) -> list[FeedEvent]:
    """Everything on record after `after`, read until the `ready` event."""
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": str(after)}
    out: list[FeedEvent] = []
    with httpx.stream(
        "GET", f"{base_url}/v1/events", params=params, headers=headers, timeout=10
    ) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for event in parse_sse(answer.iter_lines()):
            if event.type == "ready":
                return out
            out.append(event)
    raise AssertionError("the stream ended before `ready`")


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_every_kind_once_per_hand_off(
    shared_server: Callable[..., RunningServer],
) -> None:
    srv = shared_server(**FAST)
    key = srv.new_key()
    api = Api(srv.base_url, key)
    tail = Tail(srv.base_url, key).ready()
    try:
        # 1. a message sent by a mailbox, received and acked: fired, claimed, outcome.
        with (
            CueClient(key, srv.base_url) as client,
            Mailbox.open(client, "ev-a") as a,
            Mailbox.open(client, "ev-b") as b,
        ):
            sent = a.send(b.address, {"n": 1}, thread="t-1")
            got = next(iter(b.receive(wait=5, limit=1)))
            got.ack("done")
        # 2. a lease lost, claimed again, rejected, then redriven.
        cue = api.cue()
        lost = api.fire(cue["id"], payload_override={"task": "x"})["id"]
        assert api.claim("w1", task="x").status_code == 200
        _until(lambda: api.execution(lost)["status"] == "pending")
        assert api.claim("w2", task="x").status_code == 200
        answer = api.http.post(
            f"/v1/executions/{lost}/outcome",
            json={"success": False, "error": "boom"},
            headers={"X-Worker-Id": "w2"},
        )
        assert answer.status_code == 200, answer.text
        redriven = api.http.post(f"/v1/executions/{lost}/redrive").json()
        new = redriven["redriven_to"]
        # 3. never claimed: expired (the redriven one too, nobody claims task x).
        idle = api.fire(cue["id"], payload_override={"task": "nobody"})["id"]
        _until(lambda: api.execution(idle)["status"] == "missed")
        _until(lambda: api.execution(new)["status"] == "missed")
        events = tail.wait_for(
            lambda evs: all(len(by_execution(evs).get(e, [])) == 2 for e in (new, idle))
        )
    finally:
        tail.stop()
        api.close()
    kinds = by_execution(events)
    assert kinds[got.execution_id] == ["fired", "claimed", "outcome"]
    assert kinds[lost] == [
        "fired",
        "claimed",
        "heartbeat_lost",
        "claimed",
        "outcome",
        "redriven",
    ]
    assert kinds[new] == ["fired", "expired"]
    assert kinds[idle] == ["fired", "expired"]
    assert len(kinds) == 4

    feed = [e for e in events if e.type != "ready"]
    ids = [e.data["seq"] for e in feed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e.id == e.data["seq"] and e.type == e.data["type"] for e in feed)
    assert {e.type for e in feed} == set(EVENT_TYPES)  # every kind, in this one test
    first = [e.data for e in feed if e.data["execution_id"] == got.execution_id]
    for data in first:
        assert data["message_id"] == sent.id
        assert data["kind"] == "message"
        assert data["sender"] == a.address
        assert data["thread"] == "t-1"
        assert data["cue_id"] == b.address and data["cue_name"] == "ev-b"
        assert data["at"].endswith("+00:00")
    assert first[1]["worker_id"] == b.worker_id and first[1]["attempt"] == 1
    assert first[2]["success"] is True and first[2]["result"] == "done"
    assert first[2]["status"] == "success"
    of_lost = [e.data for e in feed if e.data["execution_id"] == lost]
    assert of_lost[0]["message_id"] is None  # a plain payload: no envelope
    assert of_lost[2]["worker_id"] == "w1" and of_lost[2]["status"] == "pending"
    assert of_lost[3]["worker_id"] == "w2" and of_lost[3]["attempt"] == 2
    assert of_lost[4]["error"] == "boom" and of_lost[4]["status"] == "failed"
    assert of_lost[5]["redriven_to"] == new
    fired_new = next(e.data for e in feed if e.data["execution_id"] == new)
    assert fired_new["redrive_of"] == lost
    # The record replays the same events, ids and data: the claim whose lease ran
    # out is kept when the message is claimed again.
    again = replay(srv.base_url, key)
    assert [(e.id, e.type, e.data) for e in again] == [(e.id, e.type, e.data) for e in feed]


def test_claim_cap_loses_the_lease_then_fails(api_on: Callable[..., Api]) -> None:
    api = api_on(**FAST)
    cue = api.cue(retry={"max_attempts": 1})
    eid = api.fire(cue["id"], payload_override={"task": "cap"})["id"]
    assert api.claim("w1", task="cap").status_code == 200
    _until(lambda: api.execution(eid)["status"] == "failed")
    srv_url = str(api.http.base_url).rstrip("/")
    events = replay(srv_url, api.key)
    mine = [e for e in events if e.data["execution_id"] == eid]
    assert [e.type for e in mine] == ["fired", "claimed", "heartbeat_lost", "outcome"]
    assert mine[2].data["status"] == "failed"
    assert "claim cap" in mine[3].data["error"]


def test_resume_after_an_id_gets_only_what_came_later(api: Api) -> None:
    cue = api.cue()
    base = str(api.http.base_url).rstrip("/")
    first = [api.fire(cue["id"], payload_override={"task": "r"})["id"] for _ in range(3)]
    seen = replay(base, api.key)
    assert [e.data["execution_id"] for e in seen] == first
    later = [api.fire(cue["id"], payload_override={"task": "r"})["id"] for _ in range(2)]
    resumed = replay(base, api.key, after=seen[-1].id or 0)
    assert [e.data["execution_id"] for e in resumed] == later
    # The query parameter does what the header does (for clients that cannot set one).
    with httpx.stream(
        "GET",
        f"{base}/v1/events",
        params={"last_event_id": str(seen[-1].id)},
        headers={"Authorization": f"Bearer {api.key}"},
        timeout=10,
    ) as answer:
        events = []
        for event in parse_sse(answer.iter_lines()):
            if event.type == "ready":
                break
            events.append(event)
    assert [e.data["execution_id"] for e in events] == later


def test_filters_by_cue_and_thread(srv: RunningServer) -> None:
    key = srv.new_key()
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "f-a") as a,
        Mailbox.open(client, "f-b") as b,
    ):
        a.send(b.address, 1, thread="keep")
        a.send(b.address, 2, thread="other")
        b.send(a.address, 3, thread="keep")
        b_address, a_address = b.address, a.address
    to_b = replay(srv.base_url, key, cue_id=b_address)
    assert [e.data["thread"] for e in to_b] == ["keep", "other"]
    assert all(e.data["cue_id"] == b_address for e in to_b)
    keep = replay(srv.base_url, key, thread="keep")
    assert {e.data["cue_id"] for e in keep} == {a_address, b_address}
    assert all(e.data["thread"] == "keep" for e in keep)


def test_a_tenant_never_sees_another_tenants_events(srv: RunningServer) -> None:
    a, b = Api(srv.base_url, srv.new_key()), Api(srv.base_url, srv.new_key())
    tail_b = Tail(srv.base_url, b.key, last_event_id=0).ready()
    try:
        cue_a = a.cue()
        fired_a = a.fire(cue_a["id"], payload_override={"task": "secret"})["id"]
        cue_b = b.cue()
        fired_b = b.fire(cue_b["id"], payload_override={"task": "mine"})["id"]
        tail_b.wait_for(lambda evs: any(e.data.get("execution_id") == fired_b for e in evs))
        assert all(e.data.get("execution_id") != fired_a for e in tail_b.events)
        assert {e.data["execution_id"] for e in replay(srv.base_url, b.key)} == {fired_b}
        # Another tenant's cue as a filter: nothing, as if it did not exist.
        assert replay(srv.base_url, b.key, cue_id=cue_a["id"]) == []
    finally:
        tail_b.stop()
        a.close()
        b.close()


def test_a_live_tail_sees_a_fire_at_once(api: Api) -> None:
    base = str(api.http.base_url).rstrip("/")
    tail = Tail(base, api.key).ready()
    try:
        cue = api.cue()
        eid = api.fire(cue["id"], payload_override={"task": "now"})["id"]
        events = tail.wait_for(lambda evs: len(evs) >= 2)
    finally:
        tail.stop()
    assert [(e.type, e.data["execution_id"]) for e in events[1:]] == [("fired", eid)]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"last_event_id": "abc"}, {}, "last_event_id"),
        ({}, {"Last-Event-ID": "-3"}, "last_event_id"),
        ({"cue": "x"}, {}, "cue"),
    ],
)
def test_bad_parameters_are_named(
    api: Api, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    answer = api.http.get("/v1/events", params=params, headers=headers)
    assert error_of(answer, 422, "validation_error")["field"] == field


def test_the_feed_needs_a_key(srv: RunningServer) -> None:
    error_of(httpx.get(f"{srv.base_url}/v1/events"), 401, "invalid_api_key")


def test_no_feed_without_extensions(api_on: Callable[..., Api]) -> None:
    api = api_on(extensions=False)
    error_of(api.http.get("/v1/events"), 404, "not_found")
    assert "extensions" not in api.http.get("/v1/info").json()


def test_info_lists_the_feed_and_redrive(api: Api) -> None:
    extensions = api.http.get("/v1/info").json()["extensions"]
    assert {"events.stream", "executions.redrive"} <= set(extensions)
