"""`/v1/executions` reads: list, get one, and list the claimable."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.errors import execution_not_found, invalid
from cuemsg.server.handlers.paging import page
from cuemsg.server.responses import listing, ok
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import CLAIMABLE_LIST_LIMIT, EXECUTION_STATES


async def list_executions(ctx: Ctx) -> Response:
    limit, offset = page(ctx.request)
    query = ctx.request.query_params
    status = query.get("status")
    if status is not None and status not in EXECUTION_STATES:
        raise invalid("status", f"must be one of {', '.join(EXECUTION_STATES)}")
    before = query.get("before")
    if before == "":
        raise invalid("before", "must be an execution id, not empty")
    executions, total = await ctx.server.storage.list_executions(
        ctx.tenant_id,
        cue_id=query.get("cue_id"),
        status=status,
        limit=limit,
        offset=offset,
        before=before,
        max_bytes=ctx.server.settings.max_page_bytes,
    )
    extra = {}
    if len(executions) < limit and offset + len(executions) < total:
        extra["truncated"] = True  # cut by max_page_bytes: page on with offset
    return await listing(
        "executions",
        executions,
        wire.execution_answer,
        sum(e.size for e in executions),
        total=total,
        limit=limit,
        offset=offset,
        **extra,
    )


async def get_execution(ctx: Ctx) -> Response:
    execution_id = ctx.param("execution_id")
    execution = await ctx.server.storage.get_execution(ctx.tenant_id, execution_id)
    if execution is None:
        raise execution_not_found(execution_id)
    return ok(wire.execution_answer(execution))


async def list_claimable(ctx: Ctx) -> Response:
    query = ctx.request.query_params
    executions = await ctx.server.storage.list_claimable(
        ctx.tenant_id,
        task=query.get("task"),
        agent=query.get("agent"),
        now=ctx.server.clock(),
        limit=CLAIMABLE_LIST_LIMIT,
        max_bytes=ctx.server.settings.max_page_bytes,
    )
    return await listing(
        "executions", executions, wire.claimable_answer, sum(e.size for e in executions)
    )
