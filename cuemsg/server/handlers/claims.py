"""Leases: claim one execution by id, claim the next (long-polling with the
`claim.wait` extension, recording the outcomes it carries first with
`claim.settle`), and extend a lease by heartbeat."""

from __future__ import annotations

import time

from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.handlers.outcomes import outcome_record, outcome_result
from cuemsg.server.notify import Handoff
from cuemsg.server.responses import ok
from cuemsg.server.schedules import complete_once
from cuemsg.server.settings import MAX_CLAIM_WAIT
from cuemsg.server.state import Ctx
from cuemsg.server.storage.base import ExecutionRow, OutcomeRecord


async def claim(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.ClaimBody)
    server = ctx.server
    lease = server.settings.lease_seconds
    execution = await server.storage.claim(
        ctx.tenant_id, ctx.param("execution_id"), body.worker_id, server.clock(), lease
    )
    return ok(wire.claim_answer(execution, lease, "claim.payload" in server.extensions))


async def claim_next(ctx: Ctx) -> Response:
    server = ctx.server
    raw = await ctx.body()
    if server.extensions:
        body = wire.decode(raw, wire.ClaimNextExtBody)
    else:
        plain = wire.decode(raw, wire.ClaimNextBody)
        body = wire.ClaimNextExtBody(worker_id=plain.worker_id)
    server.need("claim.task", "task", body.task)
    server.need("claim.task", "agent", body.agent)
    server.need("claim.wait", "wait", body.wait)
    server.need("claim.many", "limit", body.limit)
    server.need("claim.settle", "settle", body.settle)
    lease = server.settings.lease_seconds
    storage = server.storage
    limit = int(body.limit or 1)
    carried = body.settle  # recorded with the first try, in its transaction
    settled: list[answers.OutcomeResult] | None = None
    wait = min(body.wait or 0.0, MAX_CLAIM_WAIT)
    deadline = time.monotonic() + wait
    # A fire may claim its new execution for this waiting claim in its own transaction.
    handoff = Handoff(body.worker_id, lease, limit)
    handed = False
    claimed: list[ExecutionRow] = []
    if carried and wait and body.agent is None and storage.settle_rides and not server.draining:
        ridden = await _ride(ctx, body, carried, lease, limit, deadline)
        if ridden is not None:  # recorded; maybe claimed too, else the loop waits on
            (settled, claimed, handed), carried = ridden, None
    while not claimed:  # (an iteration that claims nothing returns or goes round)
        # Subscribe before trying, so a fire between the try and the wait still wakes us.
        waiter = (
            storage.notifier.subscribe(ctx.tenant_id, body.task, body.agent, handoff)
            if wait
            else None
        )
        woke = False
        try:
            server.stats.claim_attempts += 1
            if carried is not None:
                settled, claimed = await settle_and_claim(ctx, body, carried, lease, limit)
                carried = None
            else:
                claimed = await storage.claim_next(
                    ctx.tenant_id,
                    body.worker_id,
                    task=body.task,
                    agent=body.agent,
                    now=server.clock(),
                    lease_seconds=lease,
                    limit=limit,
                )
            if claimed:
                break
            remaining = deadline - time.monotonic()
            woke = (
                waiter is not None
                # a fire that took this waiter is claiming for it: wait for that even now
                and (waiter.taken or (remaining > 0 and not server.draining))
                and await waiter.wait(max(remaining, 0.0))
            )
            if waiter is not None and waiter.handed is not None:
                claimed, handed = waiter.handed, True  # even if the wait timed out meanwhile
                break
            # A client that hung up must not be handed a message it will never see.
            woke = woke and not await ctx.client_gone()
            if not woke:
                if settled is not None:  # the outcomes were recorded: say so, not 409
                    return ok(answers.ClaimedMany(claimed=False, executions=[], settled=settled))
                what = f" for task {body.task!r}" if body.task is not None else ""
                raise ApiProblem(409, "claim_failed", f"no claimable execution{what}")
        finally:
            if waiter is not None:
                if not woke:
                    # A wake that arrived after our try is not ours to keep: hand it on.
                    waiter.pass_on()
                waiter.close()
                if waiter.handed is not None and not handed:  # handed on the way out
                    await _give_back(ctx, body.worker_id, waiter.handed)
    if handed and await ctx.client_gone():  # nobody will read it: pending again
        await _give_back(ctx, body.worker_id, claimed)
        raise ApiProblem(409, "claim_failed", "the client went away")
    with_payload = "claim.payload" in server.extensions
    if body.limit is None and settled is None:
        return ok(wire.claim_answer(claimed[0], lease, with_payload))
    return ok(
        answers.ClaimedMany(
            claimed=True,
            executions=[wire.claim_answer(e, lease, with_payload) for e in claimed],
            settled=settled,
        )
    )


#: Seconds a parking claim's carried outcomes wait for a fire to record them in its
#: own transaction, with the hand-over, before they are recorded on their own.
SETTLE_RIDE = 0.05


async def _ride(
    ctx: Ctx,
    body: wire.ClaimNextExtBody,
    items: list[wire.BatchOutcomeItem],
    lease: float,
    limit: int,
    deadline: float,
) -> tuple[list[answers.OutcomeResult], list[ExecutionRow], bool] | None:
    """Record the outcomes a claim carries and claim, in one transaction, when work
    is waiting; else park the claim with them riding on the hand-over: a fire
    within `SETTLE_RIDE` records them, claims its new work for this claim and
    commits both with itself, one transaction where there were two (a receiver that
    keeps up with its sender parks after every message). The claim answers only
    after the commit that recorded them. Returns (the outcomes' results, what was
    claimed, whether a fire handed it), or None when nothing rode: no fire came in
    time, or the fire could not hand over; the caller then records them itself
    (`settle_and_claim`) as before."""
    server = ctx.server
    storage = server.storage
    now = server.clock()
    outcomes = [(item.execution_id, outcome_record(item, body.worker_id, now)) for item in items]
    server.stats.claim_attempts += 1
    done = await storage.settle_and_claim_if_claimable(
        ctx.tenant_id,
        body.worker_id,
        outcomes,
        task=body.task,
        agent=None,
        now=now,
        lease_seconds=lease,
        limit=limit,
    )
    if done is not None:
        return await _settled(ctx, outcomes, done[0], now), done[1], False
    # A storage that lets outcomes ride (`settle_rides`) answers without yielding to the
    # event loop, so no fire came between that read and this subscription.
    riding = Handoff(body.worker_id, lease, limit, tuple(outcomes))
    waiter = storage.notifier.subscribe(ctx.tenant_id, body.task, None, riding)
    try:
        await waiter.wait(min(SETTLE_RIDE, deadline - time.monotonic()))
    except BaseException:
        waiter.close()
        if waiter.handed is not None:  # handed on the way out: pending again
            await _give_back(ctx, body.worker_id, waiter.handed)
        raise
    waiter.close()  # woken without work: the caller claims at once, nothing to pass on
    claimed, results = waiter.handed, waiter.settled
    if claimed is None or results is None:
        return None
    return await _settled(ctx, outcomes, results, now), claimed, True


async def _settled(
    ctx: Ctx,
    outcomes: list[tuple[str, OutcomeRecord]],
    results: list[ExecutionRow | ApiProblem],
    now: float,
) -> list[answers.OutcomeResult]:
    """The answer for recorded outcomes; a one-shot cue completes with its execution."""
    for result in results:
        if isinstance(result, ExecutionRow):
            await complete_once(ctx.server.storage, result, now)
    return [outcome_result(eid, r) for (eid, _), r in zip(outcomes, results, strict=True)]


async def _give_back(ctx: Ctx, worker_id: str, claimed: list[ExecutionRow]) -> None:
    """Release executions a fire claimed for this request that it will not deliver."""
    ids = [e.id for e in claimed]
    await ctx.server.storage.release(ctx.tenant_id, ids, worker_id, ctx.server.clock())


async def settle_and_claim(
    ctx: Ctx,
    body: wire.ClaimNextExtBody,
    items: list[wire.BatchOutcomeItem],
    lease: float,
    limit: int,
) -> tuple[list[answers.OutcomeResult], list[ExecutionRow]]:
    """Record the outcomes a claim carries (`claim.settle`), each on its own, as
    `POST /v1/executions/outcomes` would with `X-Worker-Id: worker_id`, and
    claim, in one transaction: a refused outcome does not stop the claim, and
    the outcomes stand when nothing is claimable (the long-poll waits after)."""
    server = ctx.server
    now = server.clock()
    outcomes = [(item.execution_id, outcome_record(item, body.worker_id, now)) for item in items]
    results, claimed = await server.storage.settle_and_claim(
        ctx.tenant_id,
        body.worker_id,
        outcomes,
        task=body.task,
        agent=body.agent,
        now=now,
        lease_seconds=lease,
        limit=limit,
    )
    return await _settled(ctx, outcomes, results, now), claimed


async def heartbeat(ctx: Ctx) -> Response:
    lease = ctx.server.settings.lease_seconds
    execution = await ctx.server.storage.heartbeat(
        ctx.tenant_id,
        ctx.param("execution_id"),
        ctx.request.headers.get("x-worker-id"),
        ctx.server.clock(),
        lease,
    )
    return ok(
        answers.LeaseExtended(
            execution_id=execution.id,
            lease_extended_until=wire.iso(execution.lease_expires_at),
            acknowledged=True,
        )
    )
