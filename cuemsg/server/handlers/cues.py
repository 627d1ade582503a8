"""`/v1/cues`: create, list, get, update (pause, resume) and delete cues."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.errors import cue_not_found, invalid
from cuemsg.server.handlers.paging import page
from cuemsg.server.keys import new_cue_id
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import CueRow


def _check_schedule(schedule: dict[str, Any] | None) -> None:
    if schedule is None:
        return
    kind = schedule.get("type")
    if kind == "once":
        at = schedule.get("at")
        if not isinstance(at, str):
            raise invalid("schedule.at", "a 'once' schedule needs 'at', an ISO 8601 timestamp")
        wire.parse_time(at, "schedule.at")
    elif kind == "recurring":
        cron = schedule.get("cron")
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise invalid("schedule.cron", "a 'recurring' schedule needs a 5-field 'cron'")
    else:
        raise invalid("schedule.type", "must be 'once' or 'recurring'")


def _retry_dict(retry: wire.Retry | None) -> dict[str, Any]:
    return msgspec.to_builtins(retry or wire.Retry())  # type: ignore[no-any-return]


async def create_cue(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.CueCreate)
    _check_schedule(body.schedule)
    if body.transport == "webhook":
        url = (body.callback or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("callback.url", "a webhook cue needs callback.url (http or https)")
    now = time.time()
    cue = CueRow(
        id=new_cue_id(),
        tenant_id=ctx.tenant_id,
        name=body.name,
        description=body.description,
        transport=body.transport,
        schedule=body.schedule,
        callback=body.callback,
        payload=body.payload,
        retry=_retry_dict(body.retry),
        created_at=now,
        updated_at=now,
    )
    if body.schedule and body.schedule["type"] == "once":
        cue.next_run = wire.parse_time(body.schedule["at"], "schedule.at")
    cue = await ctx.server.storage.create_cue(cue)
    return ok(wire.cue_json(cue), 201)


async def list_cues(ctx: Ctx) -> Response:
    limit, offset = page(ctx.request)
    status = ctx.request.query_params.get("status")
    cues, total = await ctx.server.storage.list_cues(
        ctx.tenant_id, status=status, limit=limit, offset=offset
    )
    return ok(
        {"cues": [wire.cue_json(c) for c in cues], "total": total, "limit": limit, "offset": offset}
    )


async def get_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    cue = await ctx.server.storage.get_cue(ctx.tenant_id, cue_id)
    if cue is None:
        raise cue_not_found(cue_id)
    return ok(wire.cue_json(cue))


async def patch_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    body = wire.decode(await ctx.body(), wire.CuePatch)
    changes = {
        f: getattr(body, f)
        for f in ("name", "description", "status", "schedule", "payload")
        if getattr(body, f) is not None
    }
    if "schedule" in changes:
        _check_schedule(changes["schedule"])
    if body.retry is not None:
        changes["retry"] = _retry_dict(body.retry)
    cue = await ctx.server.storage.update_cue(ctx.tenant_id, cue_id, changes, time.time())
    if cue is None:
        raise cue_not_found(cue_id)
    return ok(wire.cue_json(cue))


async def delete_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    if not await ctx.server.storage.delete_cue(ctx.tenant_id, cue_id):
        raise cue_not_found(cue_id)
    return Response(status_code=204)
