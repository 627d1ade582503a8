"""`/v1/cues`: create, list, get, update (pause, resume) and delete cues."""

from __future__ import annotations

from typing import Any, get_args

import msgspec
from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.answers import Schedule, ScheduleOnce
from cuemsg.server.errors import cue_not_found, invalid
from cuemsg.server.handlers.paging import page
from cuemsg.server.keys import new_cue_id
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import CueRow

_CUE_STATES: tuple[str, ...] = get_args(answers.CueStatus)


def _schedule(schedule: Schedule | None) -> tuple[dict[str, Any] | None, float | None]:
    """The schedule as stored, and the next run it sets (the body decoder checked
    its shape: `type`, and a 5-field `cron`)."""
    if schedule is None:
        return None, None
    next_run = None
    if isinstance(schedule, ScheduleOnce):
        next_run = wire.parse_time(schedule.at, "schedule.at")
    return msgspec.to_builtins(schedule), next_run


def _retry_dict(retry: wire.Retry | None) -> dict[str, Any]:
    retry = retry or wire.Retry()
    return {
        "max_attempts": int(retry.max_attempts),
        "backoff_minutes": [int(m) for m in retry.backoff_minutes],
    }


async def create_cue(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.CueCreate)
    schedule, next_run = _schedule(body.schedule)
    if body.transport == "webhook" and body.callback is None:
        raise invalid("callback.url", "a webhook cue needs callback.url (http or https)")
    now = ctx.server.clock()
    cue = CueRow(
        id=new_cue_id(),
        tenant_id=ctx.tenant_id,
        name=body.name,
        description=body.description,
        transport=body.transport,
        schedule=schedule,
        callback=None if body.callback is None else msgspec.to_builtins(body.callback),
        payload=body.payload,
        retry=_retry_dict(body.retry),
        next_run=next_run,
        created_at=now,
        updated_at=now,
    )
    cue = await ctx.server.storage.create_cue(cue)
    return ok(wire.cue_answer(cue), 201)


async def list_cues(ctx: Ctx) -> Response:
    limit, offset = page(ctx.request)
    status = ctx.request.query_params.get("status")
    if status is not None and status not in _CUE_STATES:
        raise invalid("status", f"must be one of {', '.join(_CUE_STATES)}")
    cues, total = await ctx.server.storage.list_cues(
        ctx.tenant_id, status=status, limit=limit, offset=offset
    )
    return ok(
        answers.CuePage(
            cues=[wire.cue_answer(c) for c in cues], total=total, limit=limit, offset=offset
        )
    )


async def get_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    cue = await ctx.server.storage.get_cue(ctx.tenant_id, cue_id)
    if cue is None:
        raise cue_not_found(cue_id)
    return ok(wire.cue_answer(cue))


async def patch_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    body = wire.decode(await ctx.body(), wire.CuePatch)
    changes = {
        f: getattr(body, f)
        for f in ("name", "description", "status", "schedule", "payload")
        if getattr(body, f) is not None
    }
    if "schedule" in changes:
        changes["schedule"], _ = _schedule(body.schedule)
    if body.retry is not None:
        changes["retry"] = _retry_dict(body.retry)
    cue = await ctx.server.storage.update_cue(ctx.tenant_id, cue_id, changes, ctx.server.clock())
    if cue is None:
        raise cue_not_found(cue_id)
    return ok(wire.cue_answer(cue))


async def delete_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    if not await ctx.server.storage.delete_cue(ctx.tenant_id, cue_id):
        raise cue_not_found(cue_id)
    return Response(status_code=204)
