"""Timestamps: every one a request carries is range-checked at parse time (a 422
naming the field and the range, nothing stored), and rows an older version
stored out of range still render, in listings and gets, on both backends."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox
from cuemsg.server.settings import ServerSettings
from cuemsg.server.timestamps import EARLIEST, LATEST, render
from cuemsg.testing import RunningServer, run_server
from tests.server.conftest import Api, error_of

# Valid ISO 8601, but out of range once normalised to UTC (the examples).
PAST_END = "9999-12-31T23:59:59-23:59"
BEFORE_START = "0001-01-01T00:00:00+23:59"


def _range_error(answer: Any, field: str) -> None:
    err = error_of(answer, 422, "validation_error")
    assert err["field"] == field
    assert "out of range" in err["message"]
    assert EARLIEST.isoformat() in err["message"] and LATEST.isoformat() in err["message"]


@pytest.mark.parametrize("send_at", [PAST_END, BEFORE_START, "9999-12-31T00:00:00+00:00"])
def test_fire_send_at_out_of_range_is_422_and_stores_nothing(api: Api, send_at: str) -> None:
    cue = api.cue()
    _range_error(api.http.post(f"/v1/cues/{cue['id']}/fire", json={"send_at": send_at}), "send_at")
    listing = api.http.get("/v1/executions")
    assert listing.status_code == 200, listing.text
    assert listing.json()["total"] == 0


def test_batch_fire_names_the_bad_item(api: Api) -> None:
    cue = api.cue()
    good = {"cue_id": cue["id"]}
    answer = api.http.post("/v1/fire", json={"fires": [good, {**good, "send_at": PAST_END}]})
    _range_error(answer, "fires[1].send_at")
    assert api.http.get("/v1/executions").json()["total"] == 0


def test_schedule_at_out_of_range_is_422_on_create_and_patch(api: Api) -> None:
    once = {"type": "once", "at": BEFORE_START}
    _range_error(
        api.http.post("/v1/cues", json={"name": "x", "transport": "worker", "schedule": once}),
        "schedule.at",
    )
    assert api.http.get("/v1/cues").json()["total"] == 0
    cue = api.cue()
    _range_error(api.http.patch(f"/v1/cues/{cue['id']}", json={"schedule": once}), "schedule.at")
    assert api.http.get(f"/v1/cues/{cue['id']}").json()["schedule"] is None


def test_the_ends_of_the_range_are_accepted(api: Api) -> None:
    cue = api.cue(schedule={"type": "once", "at": EARLIEST.isoformat()})
    assert cue["next_run"] == EARLIEST.isoformat()
    fired = api.fire(cue["id"], send_at=LATEST.isoformat())
    assert fired["scheduled_for"] == LATEST.isoformat()


def test_render_clamps_what_it_cannot_show() -> None:
    assert render(1e300) == LATEST.isoformat()
    assert render(-1e300) == EARLIEST.isoformat()
    assert render(float("nan")) == EARLIEST.isoformat()
    assert render(None) is None
    assert render(0.0) == "1970-01-01T00:00:00+00:00"


# -- rows stored out of range by an older version ------------------------------------------


@pytest.fixture
def file_server(db_url: str) -> Iterator[RunningServer]:
    with run_server(ServerSettings(db=db_url)) as srv:
        yield srv


def _corrupt(db_url: str, cue_id: str, execution_id: str) -> None:
    """Write out-of-range times straight into the database, as an older version could."""
    if db_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE cuemsg_cues SET last_run = -1e15, doc = doc "
                "|| jsonb_build_object('next_run', 1e15, 'created_at', -1e15) WHERE id = %s",
                (cue_id,),
            )
            conn.execute(
                "UPDATE cuemsg_executions SET scheduled_for = 1e15, created_at = -1e15, "
                "lease_expires_at = 1e300 WHERE id = %s",
                (execution_id,),
            )
        return
    with closing(sqlite3.connect(db_url, timeout=10)) as db, db:
        db.execute(
            "UPDATE cues SET doc = json_set(doc, '$.next_run', 1e15, '$.created_at', -1e15) "
            "WHERE id = ?",
            (cue_id,),
        )
        db.execute(
            "UPDATE executions SET scheduled_for = 1e15, created_at = -1e15, "
            "lease_expires_at = 1e300 WHERE id = ?",
            (execution_id,),
        )


def test_rows_stored_out_of_range_still_list(file_server: RunningServer, db_url: str) -> None:
    key = file_server.new_key()
    with CueClient(key, file_server.base_url) as client:
        inbox = Mailbox.open(client, "inbox")
        inbox.close()
    api = Api(file_server.base_url, key)
    try:
        [cue] = api.http.get("/v1/cues").json()["cues"]
        fired = api.fire(cue["id"], payload_override={"task": "inbox"})
        _corrupt(db_url, cue["id"], fired["id"])

        cues = api.http.get("/v1/cues")
        assert cues.status_code == 200, cues.text
        [shown] = cues.json()["cues"]
        assert shown["next_run"] == LATEST.isoformat()
        assert shown["created_at"] == EARLIEST.isoformat()
        assert api.http.get(f"/v1/cues/{cue['id']}").status_code == 200

        executions = api.http.get("/v1/executions")
        assert executions.status_code == 200, executions.text
        [row] = executions.json()["executions"]
        assert row["scheduled_for"] == LATEST.isoformat()
        assert row["created_at"] == EARLIEST.isoformat()
        assert row["lease_expires_at"] == LATEST.isoformat()
        assert api.execution(fired["id"])["scheduled_for"] == LATEST.isoformat()
    finally:
        api.close()
    # The last symptom: opening the existing mailbox failed with ServerError.
    with CueClient(key, file_server.base_url) as client:
        reopened = Mailbox.open(client, "inbox")
        assert reopened.address == cue["id"]
        reopened.close()
