"""`POST /v1/executions/{id}/redrive` (extension `executions.redrive`): send a
dead letter again, once (docs/cueapi.md)."""

from __future__ import annotations

import time

from starlette.responses import Response

from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx


async def redrive(ctx: Ctx) -> Response:
    execution_id = ctx.param("execution_id")
    new, created = await ctx.server.storage.redrive(ctx.tenant_id, execution_id, time.time())
    return ok({"execution_id": execution_id, "redriven_to": new.id, "redriven": created})
