"""The error paths of the local CueAPI: schedules that cannot run, very long
outages, passes that fail (a closed database: a real fault, no mock), a cue
deleted before delivery, an endpoint nobody listens on, an `on_failure`
webhook that cannot be reached, a lease lost mid-delivery, and bad PATCHes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from cuemsg.server.schedules import MAX_COUNTED, Scheduler, first_run
from cuemsg.server.settings import ServerSettings
from cuemsg.server.storage.base import NewFire, OutcomeRecord
from cuemsg.server.storage.sqlite import SQLiteStorage
from cuemsg.server.webhooks import Dispatcher
from cuemsg.testing import free_port, run_server
from tests.storage.helpers import T0, make_cue, opened, tenant

SETTINGS = ServerSettings(db=":memory:", webhook_timeout=2.0)


def test_a_stored_schedule_that_cannot_run_is_unscheduled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> float | None:
        async with opened(str(tmp_path / "bad.db")) as storage:
            who = await tenant(storage)
            # As an older, laxer version could have stored it.
            bad = {"type": "recurring", "cron": "0 9 * * *", "timezone": "Nowhere/Land"}
            cue = await make_cue(storage, who, schedule=bad, next_run=T0)
            assert await Scheduler(storage, now=lambda: T0 + 1).tick() == []
            after = await storage.get_cue(who, cue.id)
            assert after is not None
            return after.next_run

    with caplog.at_level(logging.WARNING, logger="cuemsg.server"):
        assert asyncio.run(scenario()) is None
    assert "cannot run" in caplog.text and "Nowhere/Land" in caplog.text


def test_a_very_long_outage_counts_up_to_a_cap(tmp_path: Path) -> None:
    every_minute = {"type": "recurring", "cron": "* * * * *", "timezone": "UTC"}

    async def scenario() -> tuple[dict[str, object] | None, float | None, float]:
        async with opened(str(tmp_path / "long.db")) as storage:
            who = await tenant(storage)
            cue = await make_cue(
                storage, who, schedule=every_minute, next_run=first_run(every_minute, T0)
            )
            now = T0 + 2 * 86400  # two days: 2,880 runs missed
            (execution,) = await Scheduler(storage, now=lambda: now).tick()
            after = await storage.get_cue(who, cue.id)
            assert after is not None
            return execution.detail, after.next_run, now

    detail, next_run, now = asyncio.run(scenario())
    assert detail is not None and detail["missed_runs"] == MAX_COUNTED
    assert f"{MAX_COUNTED + 1}+ missed run(s)" in str(detail["message"])
    assert next_run is not None and now < next_run <= now + 60


def test_failing_passes_are_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        closed = SQLiteStorage(str(tmp_path / "closed.db"))  # never opened: every call fails
        tasks = [
            asyncio.create_task(Scheduler(closed).run_forever(0.01)),
            asyncio.create_task(Dispatcher(closed, SETTINGS).run_forever(0.01)),
        ]
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="cuemsg.server"):
        asyncio.run(scenario())
    assert "scheduler pass failed (1 in a row)" in caplog.text
    assert "webhook pass failed (1 in a row)" in caplog.text


def test_delivery_failures_read_plainly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/hook"

    async def scenario() -> tuple[str | None, str | None, str]:
        async with opened(str(tmp_path / "fail.db")) as storage:
            who = await tenant(storage)
            gone = await make_cue(storage, who, transport="webhook", callback={"url": nobody})
            dead = await make_cue(
                storage,
                who,
                transport="webhook",
                callback={"url": nobody},
                max_attempts=1,
                on_failure={"webhook": nobody, "pause": True},
            )
            (first,) = await storage.fire(who, [NewFire(cue_id=gone.id, scheduled_for=0)], 1.0)
            (second,) = await storage.fire(who, [NewFire(cue_id=dead.id, scheduled_for=0)], 1.0)
            await storage.delete_cue(who, gone.id)
            dispatcher = Dispatcher(storage, SETTINGS)
            assert await dispatcher.pump() == 2
            await dispatcher.drain()
            await dispatcher.aclose()
            one = await storage.get_execution(who, first.id)
            two = await storage.get_execution(who, second.id)
            paused = await storage.get_cue(who, dead.id)
            assert one and one.outcome and two and two.outcome and paused
            return one.outcome.error, two.outcome.error, paused.status

    with caplog.at_level(logging.WARNING, logger="cuemsg.server"):
        deleted, unreachable, status = asyncio.run(scenario())
    assert deleted == "the cue was deleted before delivery (attempt 1 of 3)"
    assert unreachable is not None
    assert unreachable.startswith("could not reach the endpoint: ")
    assert unreachable.endswith("(attempt 1 of 1)")
    assert status == "paused"  # on_failure ran although its webhook could not be reached
    assert "on_failure webhook of cue" in caplog.text


def test_a_delivery_whose_lease_was_lost_is_not_closed(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool, str]:
        async with opened(str(tmp_path / "lease.db")) as storage:
            who = await tenant(storage)
            cue = await make_cue(
                storage, who, transport="webhook", callback={"url": "http://x.invalid"}
            )
            (fired,) = await storage.fire(who, [NewFire(cue_id=cue.id, scheduled_for=0)], 1.0)
            (leased,) = await storage.claim_deliveries(who, 2.0, 0.5, 10)
            await storage.sweep(5.0, since=0.0, unclaimed_timeout=0)  # the lease ran out
            (again,) = await storage.claim_deliveries(who, 6.0, 0.5, 10)
            done = OutcomeRecord(success=True, recorded_at=7.0)
            late = await storage.finish_delivery(
                fired.id, leased.attempts, outcome=done, retry_at=None, detail={}
            )
            current = await storage.finish_delivery(
                fired.id, again.attempts, outcome=done, retry_at=None, detail={}
            )
            row = await storage.get_execution(who, fired.id)
            assert row is not None
            return late, current, row.status

    assert asyncio.run(scenario()) == (False, True, "success")


def test_bad_patches_are_refused() -> None:
    public = ServerSettings(db=":memory:", host="0.0.0.0", registration="open")
    with (
        run_server(public) as srv,
        httpx.Client(
            base_url=srv.base_url, headers={"Authorization": f"Bearer {srv.api_key}"}
        ) as http,
    ):
        cue = http.post("/v1/cues", json={"name": "p", "transport": "worker"}).json()
        to_loopback = http.patch(
            f"/v1/cues/{cue['id']}", json={"callback": {"url": "http://127.0.0.1/x"}}
        )
        not_http = http.patch(f"/v1/cues/{cue['id']}", json={"callback": {"url": "file:///x"}})
        alarm = http.patch(
            f"/v1/cues/{cue['id']}", json={"on_failure": {"webhook": "http://10.0.0.1/"}}
        )
        missing = http.patch("/v1/cues/cue_nonexistent0", json={"status": "active"})
    assert to_loopback.status_code == 422 and "loopback" in to_loopback.json()["error"]["message"]
    assert not_http.json()["error"]["field"] == "callback.url"
    assert alarm.json()["error"]["field"] == "on_failure.webhook"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "cue_not_found"
