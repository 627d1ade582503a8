"""Telling a requester that its request was settled without a reply (`NoReply`).

A request acked or rejected with no reply would leave its requester waiting
until its deadline, then reported as a timeout. Instead the mailbox that
settles it fires a small notice on the request's reply route, as a reply
would go: an `error` reply whose body names `NoReply`, the worker, and how
the request was settled. This version raises `NoReply` from it; an older
requester reads it as `RemoteError("NoReply", ...)`, still at once. It costs
one fire, and only when a request ends without a reply.

A request whose deadline passes first (the notice was lost, or the worker
was not cuemsg's) reads the same from its execution's record (`from_record`).
"""

from __future__ import annotations

from typing import Any

from cuemsg._exceptions import NoReply
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import outcome_meta_of

#: The `type` of a no-reply notice's error body.
NO_REPLY = "NoReply"
#: Outcome states (`outcome_metadata`) of a request settled without a reply.
_SETTLED_WITHOUT_REPLY = ("acked", "rejected")
_REJECTED_PREFIX = "rejected: "


def describe(request_id: str, worker_id: str | None, settled: str, reason: str | None) -> str:
    """`request X was acked by worker W without a reply` (with the reject's reason)."""
    who = f"worker {worker_id}" if worker_id else "its receiver"
    why = f" (reason: {reason})" if reason else ""
    return f"request {request_id} was {settled} by {who} without a reply{why}"


def notice_body(
    *, request_id: str, worker_id: str, settled: str, reason: str | None, execution_id: str
) -> dict[str, Any]:
    """The body of the notice (`ErrorBody`'s `type` and `message`, plus the facts)."""
    body: dict[str, Any] = {
        "type": NO_REPLY,
        "message": describe(request_id, worker_id, settled, reason),
        "worker_id": worker_id,
        "settled": settled,
        "execution_id": execution_id,
    }
    if reason is not None:
        body["reason"] = reason
    return body


def from_notice(body: Any, correlation_id: str | None) -> NoReply | None:
    """The `NoReply` a notice's body tells, or None when `body` is another error reply."""
    if not isinstance(body, dict) or body.get("type") != NO_REPLY:
        return None
    settled = body.get("settled")
    if not isinstance(settled, str):
        return None  # an error a handler named NoReply itself: a RemoteError
    worker = body.get("worker_id")
    reason = body.get("reason")
    execution = body.get("execution_id")
    return NoReply(
        str(body.get("message") or ""),
        worker_id=worker if isinstance(worker, str) else None,
        settled=settled,
        reason=reason if isinstance(reason, str) else None,
        correlation_id=correlation_id,
        execution_id=execution if isinstance(execution, str) else None,
    )


def from_record(exe: Execution, request_id: str) -> NoReply | None:
    """The `NoReply` a request's execution record shows (acked or rejected, no reply)."""
    state = outcome_meta_of(exe.outcome).get("state")
    if state not in _SETTLED_WITHOUT_REPLY:
        return None
    reason = None
    if state == "rejected":
        text = str((exe.outcome or {}).get("error") or "")
        reason = text.removeprefix(_REJECTED_PREFIX) or None
    worker = exe.claimed_by_worker
    return NoReply(
        describe(request_id, worker, str(state), reason),
        worker_id=worker,
        settled=str(state),
        reason=reason,
        correlation_id=request_id,
        execution_id=exe.id,
    )
