"""`/v1/cues`: create, list, get, update (pause, resume) and delete cues."""

from __future__ import annotations

from typing import Any, get_args

import msgspec
from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.answers import OnFailure, Schedule
from cuemsg.server.errors import cue_not_found, invalid
from cuemsg.server.handlers.paging import page
from cuemsg.server.keys import new_cue_id
from cuemsg.server.responses import ok
from cuemsg.server.schedules import check_schedule, first_run
from cuemsg.server.ssrf import Guard, UrlRefused
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import CueRow

_CUE_STATES: tuple[str, ...] = get_args(answers.CueStatus)


async def _check_webhook(ctx: Ctx, field: str, url: object) -> None:
    """A webhook URL must be http(s) and reach an address the SSRF guard allows."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid(field, "must be an http or https URL")
    settings = ctx.server.settings
    guard = Guard(loopback_ok=settings.loopback, allow=settings.webhook_allow)
    try:
        await guard.check(url, must_resolve=False)
    except UrlRefused as exc:
        raise invalid(field, str(exc)) from None


def _stored(schedule: Schedule | None) -> dict[str, Any] | None:
    """A decoded schedule as the cue stores it (and `schedules.py` reads it)."""
    return None if schedule is None else msgspec.to_builtins(schedule)


async def _check_on_failure(ctx: Ctx, on_failure: OnFailure | None) -> dict[str, Any] | None:
    if on_failure is None:
        return None
    if on_failure.webhook is not None:
        await _check_webhook(ctx, "on_failure.webhook", on_failure.webhook)
    return msgspec.to_builtins(on_failure)  # type: ignore[no-any-return]


def _retry_dict(retry: wire.Retry | None) -> dict[str, Any]:
    retry = retry or wire.Retry()
    return {
        "max_attempts": int(retry.max_attempts),
        "backoff_minutes": [int(m) for m in retry.backoff_minutes],
    }


async def create_cue(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.CueCreate)
    schedule = _stored(body.schedule)
    check_schedule(schedule)
    if body.transport == "webhook":
        if body.callback is None:
            raise invalid("callback.url", "a webhook cue needs callback.url (http or https)")
        await _check_webhook(ctx, "callback.url", body.callback.url)
    on_failure = await _check_on_failure(ctx, body.on_failure)
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
        on_failure=on_failure,
        next_run=first_run(schedule, now),
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
        for f in ("name", "description", "status", "payload")
        if getattr(body, f) is not None
    }
    if body.schedule is not None:
        changes["schedule"] = _stored(body.schedule)
        check_schedule(changes["schedule"])
    if body.retry is not None:
        changes["retry"] = _retry_dict(body.retry)
    if body.callback is not None:
        await _check_webhook(ctx, "callback.url", body.callback.url)
        changes["callback"] = msgspec.to_builtins(body.callback)
    if body.on_failure is not None:
        changes["on_failure"] = await _check_on_failure(ctx, body.on_failure)
    now = ctx.server.clock()
    # A new schedule, or a resumed cue, runs from now on (a pause is not caught up).
    if "schedule" in changes:
        changes["next_run"] = first_run(changes["schedule"], now)
    elif changes.get("status") == "active":
        current = await ctx.server.storage.get_cue(ctx.tenant_id, cue_id)
        if current is None:
            raise cue_not_found(cue_id)
        if current.status != "active":
            changes["next_run"] = first_run(current.schedule, now)
    cue = await ctx.server.storage.update_cue(ctx.tenant_id, cue_id, changes, now)
    if cue is None:
        raise cue_not_found(cue_id)
    return ok(wire.cue_answer(cue))


async def delete_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    if not await ctx.server.storage.delete_cue(ctx.tenant_id, cue_id):
        raise cue_not_found(cue_id)
    return Response(status_code=204)
