"""Schedules that fire, driven by a fake clock through `Scheduler.tick()` on
each backend: cron in a time zone, `once`, missed runs after downtime, paused
and mailbox cues that never fire, replicas racing for one run; and the
validation of schedules at the API."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from cuemsg import CueClient, Mailbox
from cuemsg.server.schedules import Scheduler, complete_once, first_run
from cuemsg.server.settings import ServerSettings
from cuemsg.server.storage.base import CueRow, OutcomeRecord, Storage
from cuemsg.testing import run_server
from tests.storage.helpers import T0, make_cue, opened, tenant

pytestmark = pytest.mark.anyio

PARIS = ZoneInfo("Europe/Paris")
NINE_IN_PARIS = {"type": "recurring", "cron": "0 9 * * *", "timezone": "Europe/Paris"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _cue(storage: Storage, schedule: dict[str, Any], **kw: Any) -> CueRow:
    tenant_id = await tenant(storage)
    return await make_cue(
        storage, tenant_id, schedule=schedule, next_run=first_run(schedule, T0), **kw
    )


async def test_a_cron_cue_fires_on_its_schedule_in_its_time_zone(db_url: str) -> None:
    async with opened(db_url) as storage:
        cue = await _cue(storage, NINE_IN_PARIS)
        due = cue.next_run
        assert due is not None
        assert datetime.fromtimestamp(due, PARIS).hour == 9
        clock = Clock(due - 1)
        scheduler = Scheduler(storage, now=clock)
        assert await scheduler.tick() == []  # not yet
        clock.now = due + 0.2
        (execution,) = await scheduler.tick()
        assert await scheduler.tick() == []  # once per run
        stored = await storage.get_execution(cue.tenant_id, execution.id)
        after = await storage.get_cue(cue.tenant_id, cue.id)
    assert stored is not None and after is not None
    assert stored.triggered_by == "schedule"
    assert stored.scheduled_for == due
    assert stored.payload == cue.payload
    assert stored.detail is None  # on time
    assert after.next_run == due + 24 * 3600  # 09:00 Paris the next day
    assert (after.run_count, after.fired_count) == (1, 1)
    assert after.last_run == pytest.approx(due + 0.2)


async def test_a_server_that_was_down_fires_what_it_missed_once(db_url: str) -> None:
    async with opened(db_url) as storage:
        cue = await _cue(storage, NINE_IN_PARIS)
        assert cue.next_run is not None
        clock = Clock(cue.next_run + 3 * 24 * 3600 + 60)  # down for three days
        (execution,) = await Scheduler(storage, now=clock).tick()
        after = await storage.get_cue(cue.tenant_id, cue.id)
        listed, total = await storage.list_executions(
            cue.tenant_id, cue_id=cue.id, status=None, limit=10, offset=0
        )
    assert total == 1 and listed[0].id == execution.id
    assert listed[0].detail is not None
    assert listed[0].detail["late"] is True
    assert listed[0].detail["missed_runs"] == 3
    assert "4 missed run(s) fired once" in listed[0].detail["message"]
    assert after is not None and after.next_run is not None
    assert clock.now < after.next_run <= clock.now + 24 * 3600


async def test_a_once_cue_fires_at_its_time_and_completes_after_its_outcome(
    db_url: str,
) -> None:
    at = T0 + 30
    schedule = {"type": "once", "at": datetime.fromtimestamp(at, PARIS).isoformat()}
    async with opened(db_url) as storage:
        cue = await _cue(storage, schedule)
        assert cue.next_run == at
        clock = Clock(at + 1)
        (execution,) = await Scheduler(storage, now=clock).tick()
        assert await Scheduler(storage, now=Clock(at + 10**6)).tick() == []
        fired = await storage.get_cue(cue.tenant_id, cue.id)
        assert fired is not None and fired.next_run is None and fired.status == "active"
        (claimed,) = await storage.claim_next(
            cue.tenant_id, "w", task="t", agent=None, now=at + 2, lease_seconds=60, limit=1
        )
        assert claimed.id == execution.id
        done = await storage.record_outcome(
            cue.tenant_id, execution.id, "w", OutcomeRecord(success=True, recorded_at=at + 3)
        )
        await complete_once(storage, done, at + 3)
        completed = await storage.get_cue(cue.tenant_id, cue.id)
    assert completed is not None and completed.status == "completed"


async def test_paused_cues_never_fire(db_url: str) -> None:
    async with opened(db_url) as storage:
        cue = await _cue(storage, NINE_IN_PARIS, status="paused")
        years = Clock(T0 + 3 * 365 * 24 * 3600)
        assert await Scheduler(storage, now=years).tick() == []
        later = await storage.get_cue(cue.tenant_id, cue.id)
    assert later is not None and (later.run_count, later.fired_count) == (0, 0)


async def test_replicas_fire_each_run_exactly_once(db_url: str) -> None:
    # Several schedulers (as on several replicas) tick at the same moment.
    async with opened(db_url) as storage, opened(db_url) as other:
        cues = [await _cue(storage, NINE_IN_PARIS) for _ in range(5)]
        due = max(c.next_run or 0 for c in cues) + 1
        schedulers = [Scheduler(s, now=Clock(due)) for s in (storage, other, storage, other)]
        results = await asyncio.gather(*(s.tick() for s in schedulers))
        fired = [e.cue_id for result in results for e in result]
        totals = [
            (
                await storage.list_executions(
                    c.tenant_id, cue_id=c.id, status=None, limit=5, offset=0
                )
            )[1]
            for c in cues
        ]
    assert sorted(fired) == sorted(c.id for c in cues)
    assert totals == [1] * 5


async def test_a_cue_from_before_schedules_gets_its_next_run_without_firing(
    db_url: str,
) -> None:
    async with opened(db_url) as storage:
        tenant_id = await tenant(storage)
        cue = await make_cue(storage, tenant_id, schedule=NINE_IN_PARIS, next_run=0.0)
        assert await Scheduler(storage, now=Clock(T0)).tick() == []
        after = await storage.get_cue(tenant_id, cue.id)
    assert after is not None and after.next_run == first_run(NINE_IN_PARIS, T0)


def test_mailbox_cues_never_fire_on_their_own(tmp_path: Path) -> None:
    db = str(tmp_path / "mail.db")
    with run_server(ServerSettings(db=db)) as srv:
        client = CueClient(srv.api_key, srv.base_url)
        with Mailbox.open(client, "inbox"), Mailbox.open(client, "outbox"):
            pass
        cues = httpx.get(
            srv.base_url + "/v1/cues", headers={"Authorization": f"Bearer {srv.api_key}"}
        ).json()["cues"]
        client.close()

        async def ten_years_of_ticks() -> list[object]:
            async with opened(db) as storage:
                fired: list[object] = []
                for year in range(10):
                    when = T0 + year * 365.25 * 24 * 3600 + 3600
                    fired += await Scheduler(storage, now=Clock(when)).tick()
                return fired

        assert asyncio.run(ten_years_of_ticks()) == []
    assert cues and all(c["status"] == "paused" for c in cues)
    assert all(c["run_count"] == 0 for c in cues)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"type": "recurring", "cron": "61 * * * *"}, "schedule.cron"),
        ({"type": "recurring", "cron": "* * *"}, "schedule.cron"),
        (
            {"type": "recurring", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
            "schedule.timezone",
        ),
        ({"type": "once", "at": "2030-01-01T00:00:00Z", "timezone": 5}, "schedule.timezone"),
        ({"type": "weekly"}, "schedule.type"),
    ],
)
def test_unrunnable_schedules_are_refused(schedule: dict[str, object], field: str) -> None:
    with run_server() as srv:
        answer = httpx.post(
            srv.base_url + "/v1/cues",
            headers={"Authorization": f"Bearer {srv.api_key}"},
            json={"name": "s", "transport": "worker", "schedule": schedule},
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_the_api_shows_next_run_and_resumes_from_now() -> None:
    with (
        run_server() as srv,
        httpx.Client(
            base_url=srv.base_url, headers={"Authorization": f"Bearer {srv.api_key}"}
        ) as http,
    ):
        cue = http.post(
            "/v1/cues", json={"name": "n", "transport": "worker", "schedule": NINE_IN_PARIS}
        ).json()
        nine = datetime.fromisoformat(cue["next_run"]).astimezone(PARIS)
        assert (nine.hour, nine.minute) == (9, 0)
        http.patch(f"/v1/cues/{cue['id']}", json={"status": "paused"})
        resumed = http.patch(f"/v1/cues/{cue['id']}", json={"status": "active"}).json()
        assert resumed["next_run"] == cue["next_run"]  # from now: the same next 09:00
        hourly = http.patch(
            f"/v1/cues/{cue['id']}",
            json={"schedule": {"type": "recurring", "cron": "30 * * * *", "timezone": "UTC"}},
        ).json()
    assert datetime.fromisoformat(hourly["next_run"]).minute == 30
