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
from cuemsg.server.schedules import check_schedule, first_run
from cuemsg.server.ssrf import Guard, UrlRefused
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import CueRow


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


async def _check_on_failure(ctx: Ctx, on_failure: wire.OnFailure | None) -> dict[str, Any] | None:
    if on_failure is None:
        return None
    if on_failure.webhook is not None:
        await _check_webhook(ctx, "on_failure.webhook", on_failure.webhook)
    return msgspec.to_builtins(on_failure)  # type: ignore[no-any-return]


def _retry_dict(retry: wire.Retry | None) -> dict[str, Any]:
    return msgspec.to_builtins(retry or wire.Retry())  # type: ignore[no-any-return]


async def create_cue(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.CueCreate)
    check_schedule(body.schedule)
    if body.transport == "webhook":
        url = (body.callback or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("callback.url", "a webhook cue needs callback.url (http or https)")
        await _check_webhook(ctx, "callback.url", url)
    on_failure = await _check_on_failure(ctx, body.on_failure)
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
        on_failure=on_failure,
        next_run=first_run(body.schedule, now),
        created_at=now,
        updated_at=now,
    )
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
        check_schedule(changes["schedule"])
    if body.retry is not None:
        changes["retry"] = _retry_dict(body.retry)
    if body.callback is not None:
        await _check_webhook(ctx, "callback.url", body.callback.get("url"))
        changes["callback"] = body.callback
    if body.on_failure is not None:
        changes["on_failure"] = await _check_on_failure(ctx, body.on_failure)
    now = time.time()
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
    return ok(wire.cue_json(cue))


async def delete_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    if not await ctx.server.storage.delete_cue(ctx.tenant_id, cue_id):
        raise cue_not_found(cue_id)
    return Response(status_code=204)
