"""`POST /v1/cues/{cue_id}/fire` and `POST /v1/fire` (the `fire.batch`
extension): executions made from cues, idempotency keys hashed with their body."""

from __future__ import annotations

import hashlib

import msgspec
from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import NewFire

_canonical = msgspec.json.Encoder(order="sorted")


def _new_fire(cue_id: str, body: wire.FireBody, now: float, field: str) -> NewFire:
    when = now if body.send_at is None else wire.parse_time(body.send_at, f"{field}send_at")
    body_hash = None
    if body.idempotency_key is not None:
        # "The same body" is the fire body, key aside, as canonical JSON.
        parts = msgspec.to_builtins(body)
        parts.pop("idempotency_key", None)
        parts.pop("cue_id", None)
        body_hash = hashlib.sha256(_canonical.encode(parts)).hexdigest()
    return NewFire(
        cue_id=cue_id,
        payload_override=body.payload_override,
        merge_strategy=body.merge_strategy,
        scheduled_for=max(when, now),
        idempotency_key=body.idempotency_key,
        body_hash=body_hash,
    )


async def fire(ctx: Ctx) -> Response:
    raw = await ctx.body()
    body = wire.decode(raw, wire.FireBody)
    now = ctx.server.clock()
    new = _new_fire(ctx.param("cue_id"), body, now, "")
    # The body's size stands for the payload it stores (the cue's own payload aside).
    await ctx.server.quotas.admit_fire(ctx.tenant_id, 1, len(raw))
    [execution] = await ctx.server.storage.fire(ctx.tenant_id, [new], now)
    return ok(wire.fire_answer(execution))


async def fire_batch(ctx: Ctx) -> Response:
    raw = await ctx.body()
    body = wire.decode(raw, wire.BatchFire)
    now = ctx.server.clock()
    fires = [_new_fire(f.cue_id, f, now, f"fires[{i}].") for i, f in enumerate(body.fires)]
    await ctx.server.quotas.admit_fire(ctx.tenant_id, len(fires), len(raw))
    executions = await ctx.server.storage.fire(ctx.tenant_id, fires, now)
    return ok(answers.FiredMany(executions=[wire.fire_answer(e) for e in executions]))
