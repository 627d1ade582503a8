"""Schedules of the local CueAPI: checking a cue's `schedule`, computing its
next run, and the `Scheduler` that fires cues when they come due.

`once` cues run at `at`; `recurring` cues on their 5-field `cron` in their
`timezone` (cronsim evaluates the expression, zoneinfo the zone, daylight
saving included). Each run is one execution with `triggered_by: "schedule"`
and the cue's payload, fired by `Storage.advance_schedule`: a claim on the
cue's `next_run`, so that of several replicas exactly one fires each run.

A server that was down fires what it missed once, not once per missed run,
and says so in the execution's `detail`. Paused cues (mailboxes among them)
never fire on their own: only active cues come due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from cuemsg.server import timestamps
from cuemsg.server.errors import invalid
from cuemsg.server.storage.base import (
    CueRow,
    ExecutionRow,
    NewFire,
    Storage,
    new_execution,
    new_execution_id,
)

log = logging.getLogger("cuemsg.server")

#: A run fired this many seconds after it was due is reported as late.
LATE_AFTER = 60.0
#: Missed runs are counted up to this many (the rest are "at least" that).
MAX_COUNTED = 1000


def check_schedule(schedule: dict[str, Any] | None) -> None:
    """422 naming the field when `schedule` is not one the server can run."""
    if schedule is None:
        return
    kind = schedule.get("type")
    if kind == "once":
        at = schedule.get("at")
        if not isinstance(at, str):
            raise invalid("schedule.at", "a 'once' schedule needs 'at', an ISO 8601 timestamp")
        timestamps.parse_time(at, "schedule.at")
    elif kind == "recurring":
        cron = schedule.get("cron")
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise invalid("schedule.cron", "a 'recurring' schedule needs a 5-field 'cron'")
        try:
            CronSim(cron, datetime.now(timezone.utc))
        except CronSimError as exc:
            raise invalid(
                "schedule.cron", f"{cron!r} is not a valid cron expression: {exc}"
            ) from None
    else:
        raise invalid("schedule.type", "must be 'once' or 'recurring'")
    _zone(schedule)


def _zone(schedule: dict[str, Any]) -> ZoneInfo:
    name = schedule.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise invalid("schedule.timezone", "must be an IANA time zone name such as 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(
            "schedule.timezone", f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris')"
        ) from None


def _cron_runs(schedule: dict[str, Any], after: float) -> CronSim:
    start = datetime.fromtimestamp(after, _zone(schedule))
    return CronSim(str(schedule["cron"]), start)


def first_run(schedule: dict[str, Any] | None, now: float) -> float | None:
    """The `next_run` of a cue given `schedule` at `now` (None: it never runs)."""
    if schedule is None:
        return None
    if schedule.get("type") == "once":
        return timestamps.parse_time(str(schedule["at"]), "schedule.at")
    return next(_cron_runs(schedule, now)).timestamp()


def runs_since(schedule: dict[str, Any], due: float, now: float) -> tuple[int, float]:
    """For a recurring schedule due at `due`: how many later runs were also due
    by `now` (missed, capped at `MAX_COUNTED`), and the first run after `now`."""
    for missed, run in enumerate(_cron_runs(schedule, due)):
        at = run.timestamp()
        if at > now:
            return missed, at
        if missed + 1 >= MAX_COUNTED:  # a long outage: skip ahead instead of counting on
            return missed + 1, next(_cron_runs(schedule, now)).timestamp()
    raise AssertionError("a cron schedule always has a next run")  # pragma: no cover


def late_detail(due: float, now: float, missed: int) -> dict[str, Any] | None:
    """What a scheduled execution says about itself when it fired late."""
    if missed == 0 and now - due <= LATE_AFTER:
        return None
    runs = f"{missed + 1}{'+' if missed >= MAX_COUNTED else ''}"
    return {
        "late": True,
        "due_at": timestamps.render(due),
        "missed_runs": missed,
        "message": (
            f"fired late: the run due at {timestamps.render(due)} was missed "
            f"(the server was not running); {runs} missed run(s) fired once"
        ),
    }


def scheduled_execution(
    cue: CueRow, due: float, now: float, detail: dict[str, Any] | None
) -> ExecutionRow:
    """The execution one scheduled run of `cue` makes (not stored yet)."""
    fire = NewFire(cue_id=cue.id, scheduled_for=due)
    execution = new_execution(cue.tenant_id, cue, fire, new_execution_id(), now)
    return msgspec.structs.replace(
        execution, scheduled_for=due, triggered_by="schedule", detail=detail
    )


class Scheduler:
    """Fires due cues; `tick()` is one pass, `run_forever()` the server's task.

    Args:
        storage: the open backend.
        now: the clock (UNIX seconds); tests pass a fake one.
        batch: cues looked at per pass.
    """

    def __init__(
        self, storage: Storage, *, now: Callable[[], float] = time.time, batch: int = 100
    ) -> None:
        self.storage = storage
        self.now = now
        self.batch = batch

    async def tick(self) -> list[ExecutionRow]:
        """Fire every cue due now; the executions this pass made."""
        now = self.now()
        fired: list[ExecutionRow] = []
        for cue in await self.storage.due_cues(now, self.batch):
            execution = await self._run(cue, now)
            if execution is not None:
                fired.append(execution)
        return fired

    async def _run(self, cue: CueRow, now: float) -> ExecutionRow | None:
        due = cue.next_run
        assert due is not None  # due_cues selects next_run <= now
        schedule = cue.schedule
        try:
            if not schedule or due == 0:
                # 0: a cue made before schedules ran; compute its next run, fire nothing.
                return await self.storage.advance_schedule(cue, due, first_run(schedule, now), None)
            if schedule.get("type") == "once":
                missed, following = 0, None
            else:
                missed, following = runs_since(schedule, due, now)
        except Exception as exc:  # a schedule stored by an older, laxer version
            log.warning("cue %s: schedule %r cannot run (%s); not scheduled", cue.id, schedule, exc)
            return await self.storage.advance_schedule(cue, due, None, None)
        execution = scheduled_execution(cue, due, now, late_detail(due, now, missed))
        return await self.storage.advance_schedule(cue, due, following, execution)

    async def run_forever(self, interval: float) -> None:
        failures = 0
        while True:
            try:
                await self.tick()
                failures = 0
            except Exception:  # keep going: the next pass retries what this one missed
                if failures % max(1, int(60 / interval)) == 0:
                    log.exception("scheduler pass failed (%d in a row)", failures + 1)
                failures += 1
            await asyncio.sleep(interval)


async def complete_once(storage: Storage, execution: ExecutionRow, now: float) -> None:
    """After the outcome of a `once` cue's scheduled run, the cue is `completed`
    (or `failed`), as the hosted service marks it."""
    if execution.triggered_by != "schedule" or execution.status not in ("success", "failed"):
        return
    cue = await storage.get_cue(execution.tenant_id, execution.cue_id)
    if cue is None or not cue.schedule or cue.schedule.get("type") != "once":
        return
    status = "completed" if execution.status == "success" else "failed"
    await storage.update_cue(cue.tenant_id, cue.id, {"status": status}, now)
