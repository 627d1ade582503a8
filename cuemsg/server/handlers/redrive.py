"""`POST /v1/executions/{id}/redrive` (extension `executions.redrive`): send a
dead letter again, once (docs/cueapi.md)."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server import answers
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx


async def redrive(ctx: Ctx) -> Response:
    execution_id = ctx.param("execution_id")
    new, created = await ctx.server.storage.redrive(ctx.tenant_id, execution_id, ctx.server.clock())
    return ok(answers.Redriven(execution_id=execution_id, redriven_to=new.id, redriven=created))
