"""Answering a request by its execution id, from any process (`cuemsg reply`).

A request claimed by one process (say `cuemsg listen`, which leaves it
unsettled) can be answered by another that knows only the execution id:

```python
from cuemsg.mailbox.answer import reply_to_execution

with CueClient() as client:
    reply_to_execution(client, "6f1c...", {"text": "done"})
```

The reply is fired to the request's `reply_cue_id` with the fields its
requester matches (kind, correlation id, reply task, thread), then the
request's outcome is recorded, as `Message.reply()` does. The planning is
plain functions; `reply_to_execution` and `areply_to_execution` only do the
three or four requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cuemsg._exceptions import MailboxError
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import ErrorBody, Meta, build_payload, decode_payload, new_id, utcnow

__all__ = ["DEFAULT_REPLY_WORKER", "Answered", "areply_to_execution", "reply_to_execution"]

#: The worker id that claims a request found unclaimed (its lease ran out) before answering.
DEFAULT_REPLY_WORKER = "cuemsg-reply"
_CLAIMABLE = ("pending", "retry_ready")


@dataclass(frozen=True)
class Answered:
    """A request answered by `reply_to_execution`.

    Attributes:
        execution_id: the request's execution (now settled).
        reply_id: the reply's message id.
        reply_execution_id: the execution the reply was fired as.
        reply_cue_id: the requester's mailbox the reply went to.
        correlation_id: the request id the requester matches the reply by.
    """

    execution_id: str
    reply_id: str
    reply_execution_id: str
    reply_cue_id: str
    correlation_id: str


@dataclass(frozen=True)
class _Plan:
    meta: Meta
    payload: dict[str, Any]
    reply_cue_id: str
    claim: bool  # the lease ran out: claim it again before recording the outcome


def _plan(execution: Execution, body: Any, error: ErrorBody | None) -> _Plan:
    """What to fire, and where, to answer the request `execution` holds (pure)."""
    eid = execution.id
    if execution.status not in ("delivering", *_CLAIMABLE):
        raise MailboxError(
            f"execution {eid} is {execution.status or 'in an unknown state'}: it is settled "
            "already, there is nothing left to reply to"
        )
    envelope = decode_payload(execution.payload or {})
    request = envelope.meta
    if request is None or request.kind != "request" or not envelope.reply_cue_id:
        kind = "a message from another program" if request is None else f"a {request.kind}"
        raise MailboxError(
            f"execution {eid} is {kind}, not a request: it has nobody waiting for a reply"
        )
    meta = Meta(
        id=new_id(),
        kind="reply" if error is None else "error",
        sender=execution.cue_id,
        correlation_id=request.correlation_id or request.id,
        thread=request.thread,
        sent_at=utcnow(),
    )
    payload = build_payload(
        meta=meta,
        body=body if error is None else error,
        task=request.reply_task,
        reply_cue_id=execution.cue_id,
    )
    return _Plan(meta, payload, envelope.reply_cue_id, execution.status in _CLAIMABLE)


def _outcome(plan: _Plan, reply_execution_id: str, error: ErrorBody | None) -> dict[str, Any]:
    """The outcome to record on the request (the same shape `Message.reply()` records)."""
    what = "reply" if error is None else f"error reply {error.type}: {error.message}"
    text = (
        f"replied: {what} sent as execution {reply_execution_id} "
        f"(correlation id {plan.meta.correlation_id})"
    )[:2000]
    state = {
        "state": "replied" if error is None else "replied_error",
        "reply_id": plan.meta.id,
        "reply_execution_id": reply_execution_id,
        "correlation_id": plan.meta.correlation_id,
    }
    return {
        "success": error is None,
        "result" if error is None else "error": text,
        "metadata": {"cuemsg": state},
    }


def _answered(execution_id: str, plan: _Plan, reply_execution_id: str) -> Answered:
    return Answered(
        execution_id=execution_id,
        reply_id=plan.meta.id,
        reply_execution_id=reply_execution_id,
        reply_cue_id=plan.reply_cue_id,
        correlation_id=plan.meta.correlation_id or "",
    )


def reply_to_execution(
    client: CueClient,
    execution_id: str,
    body: Any = None,
    *,
    error: ErrorBody | None = None,
    worker_id: str = DEFAULT_REPLY_WORKER,
) -> Answered:
    """Answer the request held by `execution_id`, then record its outcome.

    Args:
        client: a client of the request's tenant.
        execution_id: the request's execution (as `cuemsg listen` prints it).
        body: the reply body (any JSON value).
        error: answer with an error instead: the requester raises
            `RemoteError(error.type, error.message)`.
        worker_id: claims the request first if its lease has run out; while
            it is claimed, the outcome is recorded as its holder.

    Returns:
        Where the reply went.

    Raises:
        MailboxError: the execution is settled already, or is not a request.
        ClaimFailed: its lease ran out and someone else claimed it meanwhile.
        NotFound: no such execution.
    """
    execution = client.executions.get(execution_id)
    plan = _plan(execution, body, error)
    holder = execution.claimed_by_worker or worker_id
    if plan.claim:
        client.executions.claim(execution_id, worker_id=worker_id)
        holder = worker_id
    fired = client.cues.fire(plan.reply_cue_id, plan.payload, idempotency_key=plan.meta.id)
    client.executions.report_outcome(
        execution_id, worker_id=holder, **_outcome(plan, fired.id, error)
    )
    return _answered(execution_id, plan, fired.id)


async def areply_to_execution(
    client: AsyncCueClient,
    execution_id: str,
    body: Any = None,
    *,
    error: ErrorBody | None = None,
    worker_id: str = DEFAULT_REPLY_WORKER,
) -> Answered:
    """The async twin of `reply_to_execution` (same arguments, same errors)."""
    execution = await client.executions.get(execution_id)
    plan = _plan(execution, body, error)
    holder = execution.claimed_by_worker or worker_id
    if plan.claim:
        await client.executions.claim(execution_id, worker_id=worker_id)
        holder = worker_id
    fired = await client.cues.fire(plan.reply_cue_id, plan.payload, idempotency_key=plan.meta.id)
    await client.executions.report_outcome(
        execution_id, worker_id=holder, **_outcome(plan, fired.id, error)
    )
    return _answered(execution_id, plan, fired.id)
