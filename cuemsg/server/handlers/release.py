"""`POST /v1/executions/release` (extension `executions.release`): a worker hands
back executions it claimed and will not handle; each is pending again at once,
its attempt not counted against `max_attempts` (docs/cueapi.md)."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx


async def release(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.ReleaseBody)
    results = await ctx.server.storage.release(
        ctx.tenant_id, body.execution_ids, body.worker_id, ctx.server.clock()
    )
    return ok(
        answers.ReleaseResults(
            results=[
                answers.ReleaseResult(execution_id=eid, released=False, error=r.detail())
                if isinstance(r, ApiProblem)
                else answers.ReleaseResult(execution_id=eid, released=True)
                for eid, r in zip(body.execution_ids, results, strict=True)
            ]
        )
    )
