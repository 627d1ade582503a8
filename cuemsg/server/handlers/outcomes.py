"""Closing executions: `POST /v1/executions/{id}/outcome` and, with the
`outcome.batch` extension, many at once (`POST /v1/executions/outcomes`)."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import ok
from cuemsg.server.schedules import complete_once
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import ExecutionRow, OutcomeRecord


def _outcome(body: wire.OutcomeBody, worker: str | None) -> OutcomeRecord:
    return OutcomeRecord(
        success=body.success,
        result=body.result,
        error=body.error,
        metadata=body.metadata,
        recorded_at=time.time(),
        worker_id=worker,
    )


def _recorded(execution: ExecutionRow) -> dict[str, Any]:
    return {
        "execution_id": execution.id,
        "outcome_recorded": True,
        "outcome_state": execution.status,
    }


async def outcome(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.OutcomeBody)
    worker = ctx.request.headers.get("x-worker-id")
    execution = await ctx.server.storage.record_outcome(
        ctx.tenant_id, ctx.param("execution_id"), worker, _outcome(body, worker)
    )
    await complete_once(ctx.server.storage, execution, time.time())
    return ok(_recorded(execution))


async def outcome_batch(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.BatchOutcome)
    worker = ctx.request.headers.get("x-worker-id")
    items = [(item.execution_id, _outcome(item, worker)) for item in body.outcomes]
    results = await ctx.server.storage.record_outcomes(ctx.tenant_id, items, worker)
    for result in results:
        if isinstance(result, ExecutionRow):
            await complete_once(ctx.server.storage, result, time.time())
    return ok(
        {
            "results": [
                {"execution_id": execution_id, **r.body()}
                if isinstance(r, ApiProblem)
                else _recorded(r)
                for (execution_id, _), r in zip(items, results, strict=True)
            ]
        }
    )
