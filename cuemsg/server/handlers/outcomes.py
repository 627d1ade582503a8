"""Closing executions: `POST /v1/executions/{id}/outcome` and, with the
`outcome.batch` extension, many at once (`POST /v1/executions/outcomes`)."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import ok
from cuemsg.server.schedules import complete_once
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import ExecutionRow, OutcomeRecord


def _outcome(body: wire.OutcomeBody, worker: str | None, now: float) -> OutcomeRecord:
    return OutcomeRecord(
        success=body.success,
        result=body.result,
        error=body.error,
        metadata=body.metadata,
        recorded_at=now,
        worker_id=worker,
    )


def _recorded(execution: ExecutionRow) -> answers.OutcomeRecorded:
    return answers.OutcomeRecorded(
        execution_id=execution.id,
        outcome_recorded=True,
        outcome_state=execution.status,  # type: ignore[arg-type]  # stored as text
    )


def _result(execution_id: str, r: ExecutionRow | ApiProblem) -> answers.OutcomeResult:
    if isinstance(r, ApiProblem):
        return answers.OutcomeResult(execution_id=execution_id, error=r.detail())
    return answers.OutcomeResult(
        execution_id=r.id,
        outcome_recorded=True,
        outcome_state=r.status,  # type: ignore[arg-type]
    )


async def outcome(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.OutcomeBody)
    worker = ctx.request.headers.get("x-worker-id")
    now = ctx.server.clock()
    execution = await ctx.server.storage.record_outcome(
        ctx.tenant_id, ctx.param("execution_id"), worker, _outcome(body, worker, now)
    )
    await complete_once(ctx.server.storage, execution, now)
    return ok(_recorded(execution))


async def outcome_batch(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.BatchOutcome)
    worker = ctx.request.headers.get("x-worker-id")
    now = ctx.server.clock()
    items = [(item.execution_id, _outcome(item, worker, now)) for item in body.outcomes]
    results = await ctx.server.storage.record_outcomes(ctx.tenant_id, items, worker)
    for result in results:
        if isinstance(result, ExecutionRow):
            await complete_once(ctx.server.storage, result, now)
    return ok(
        answers.OutcomeResults(
            results=[
                _result(execution_id, r)
                for (execution_id, _), r in zip(items, results, strict=True)
            ]
        )
    )
