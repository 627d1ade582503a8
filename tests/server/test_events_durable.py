"""The event feed across a server restart (resume by `Last-Event-ID` from the
stored records) and across PostgreSQL replicas (an event committed through
replica A reaches a tail on replica B)."""

from __future__ import annotations

import pytest

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import run_server
from tests.conftest import PostgresURLs
from tests.feedtail import Tail, by_execution
from tests.server.conftest import Api


def _hand_off(api: Api, cue_id: str, ok: bool = True) -> str:
    eid = api.fire(cue_id)["id"]
    claimed = api.claim("w", task="work")
    assert claimed.status_code == 200, claimed.text
    answer = api.http.post(
        f"/v1/executions/{eid}/outcome",
        json={"success": ok} if ok else {"success": False, "error": "no"},
        headers={"X-Worker-Id": "w"},
    )
    assert answer.status_code == 200, answer.text
    return eid


def test_resume_after_a_restart_loses_nothing_and_repeats_nothing(db_url: str) -> None:
    settings = ServerSettings(db=db_url, sweep_interval=0.05)
    with run_server(settings) as first:
        key = first.new_key()
        api = Api(first.base_url, key)
        cue = api.cue(payload={"task": "work"})
        tail = Tail(first.base_url, key, last_event_id=0).ready()
        before = [_hand_off(api, cue["id"]) for _ in range(2)]
        seen = tail.wait_for(lambda evs: len([e for e in evs if e.type != "ready"]) == 6)
        tail.stop()
        api.close()
        last: int = [e for e in seen if e.type != "ready"][-1].data["seq"]
        # The server goes away with the tail; meanwhile nothing is lost on disk.
    with run_server(settings) as second:
        api = Api(second.base_url, key)
        after = [_hand_off(api, cue["id"], ok=False) for _ in range(2)]
        api.close()
        resumed = Tail(second.base_url, key, last_event_id=last).ready()
        got = resumed.wait_for(lambda evs: len(by_execution(evs)) == 2)
        resumed.stop()
        everything = Tail(second.base_url, key, last_event_id=0).ready()
        whole = everything.wait_for(lambda evs: len(by_execution(evs)) == 4)
        everything.stop()
    kinds = by_execution(got)
    assert list(kinds) == after  # only what came after the last id seen
    assert all(k == ["fired", "claimed", "outcome"] for k in kinds.values())
    feed = [e for e in got if e.type != "ready"]
    assert all(e.id is not None and e.data["seq"] > last for e in feed)
    assert list(by_execution(whole)) == before + after
    assert [e.id for e in whole if e.type != "ready"] == [
        e.id for e in seen if e.type != "ready"
    ] + [e.id for e in feed]


@pytest.mark.postgres
def test_an_event_through_one_replica_reaches_a_tail_on_another(
    postgres_url: PostgresURLs,
) -> None:
    db = postgres_url()
    settings = ServerSettings(db=db, sweep_interval=0.05)
    with run_server(settings) as a, run_server(settings) as b:
        key = a.new_key()
        tail_b = Tail(b.base_url, key).ready()
        try:
            api_a = Api(a.base_url, key)
            cue = api_a.cue(payload={"task": "work"})
            eids = [_hand_off(api_a, cue["id"]) for _ in range(3)]
            api_a.close()
            events = tail_b.wait_for(
                lambda evs: (
                    len(by_execution(evs)) == 3
                    and all(len(k) == 3 for k in by_execution(evs).values())
                )
            )
        finally:
            tail_b.stop()
    assert list(by_execution(events)) == eids
    assert all(k == ["fired", "claimed", "outcome"] for k in by_execution(events).values())
    ids = [e.data["seq"] for e in events if e.type != "ready"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
