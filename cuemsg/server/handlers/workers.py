"""Workers: `POST /v1/worker/heartbeat` registers one and its handlers; the
`workers.list` extension lists them (`GET /v1/workers`)."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx


async def worker_heartbeat(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.WorkerHeartbeat)
    now = ctx.server.clock()
    await ctx.server.storage.worker_heartbeat(ctx.tenant_id, body.worker_id, body.handlers, now)
    return ok(answers.WorkerAck(acknowledged=True, server_time=wire.stamp(now)))


async def list_workers(ctx: Ctx) -> Response:
    workers = await ctx.server.storage.list_workers(ctx.tenant_id)
    return ok(
        answers.WorkerList(
            workers=[
                answers.Worker(
                    worker_id=w.worker_id,
                    handlers=w.handlers,
                    last_heartbeat=wire.stamp(w.last_heartbeat),
                )
                for w in workers
            ]
        )
    )
