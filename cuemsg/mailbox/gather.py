"""Ask many: `gather` sends one request to each recipient and collects receipts.

The requests go out in one `fire.batch` where the server has it (one fire
each otherwise), each naming its gather (`Meta.gather`), and their replies
come on the mailbox's reply stream, as `request()`'s do. `gather` returns
when every recipient has answered, when `need` of them have replied, or at
the deadline, with one `Receipt` per recipient.

Requests not needed any more once `need` replies are in are withdrawn:
the requester claims each one a responder has not claimed yet and closes
it with a `cancelled` outcome, so no receiver can ever take it. One a
responder already holds runs to its end; its reply comes late and is
dropped (the receipt says so), and if that responder dies, the one that
claims it again skips it (`_withdrawn`: a marker lists it). Unanswered
requests at the deadline get the reason read from their execution's
record (`no_responder`, `dead_responder`, `slow_responder`).

HTTP cost for n recipients that all answer: one batch fire (per 100), the
reply stream's claims (up to 50 replies each, long-polled) and one
`outcome.batch` per claim; withdrawing k requests costs k claims and one
outcome batch; a reason at the deadline costs one GET per unanswered one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cuemsg._exceptions import (
    ClaimFailed,
    CueAPIError,
    CuemsgError,
    NoReply,
    NotFound,
    RemoteError,
)
from cuemsg.cueapi.models import FireRequest, OutcomeRequest
from cuemsg.envelope import new_id
from cuemsg.mailbox._ops import (
    AwaitReply,
    ClaimById,
    Fire,
    FireMany,
    Flow,
    RecordOutcomes,
    StartReplies,
)
from cuemsg.mailbox._replies import PendingReply, unwrap
from cuemsg.mailbox._request import RequestFlows
from cuemsg.mailbox._withdrawn import CANCELLED_KEY, marker_task

log = logging.getLogger("cuemsg.mailbox")

ReceiptState = Literal[
    "replied",
    "error",
    "no_reply",
    "no_responder",
    "dead_responder",
    "slow_responder",
    "cancelled",
    "unknown",
]


@dataclass(frozen=True)
class Receipt:
    """What became of one recipient's request in a `gather`.

    Attributes:
        to: the recipient's address.
        state: `replied`, `error` (its handler raised: see `error`),
            `no_reply` (acked or rejected without a reply: `error` is the
            `NoReply`), `no_responder`, `dead_responder`, `slow_responder` (no reply by
            the deadline, and why), `cancelled` (not needed any more), or
            `unknown` (its record could not be read).
        execution_id: the request's execution on the recipient's cue.
        correlation_id: the request's id.
        detail: one sentence saying why.
        error: the `RemoteError` of an `error` receipt, the `NoReply` of a `no_reply` one.
    """

    to: str
    state: ReceiptState
    execution_id: str
    correlation_id: str
    detail: str
    error: RemoteError | NoReply | None = None


@dataclass(frozen=True)
class GatherResult:
    """What `gather` returns: the replies by recipient, and a receipt for each recipient.

    Attributes:
        gather_id: the id every request of this gather carries (`Meta.gather`).
        replies: recipient address -> reply body, for those that replied.
        receipts: recipient address -> `Receipt`, one per recipient, in the order given.
    """

    gather_id: str
    replies: dict[str, Any] = field(default_factory=dict)
    receipts: dict[str, Receipt] = field(default_factory=dict)


class GatherFlows(RequestFlows):
    """Scatter-gather over the reply stream."""

    def gather(
        self,
        to: Sequence[str],
        body: Any,
        *,
        timeout: float,
        need: int | None = None,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[GatherResult]:
        """Ask every recipient; return at all answers, `need` replies, or the deadline."""
        recipients = _check_recipients(to, timeout, need)
        goal = len(recipients) if need is None else need
        addresses: list[str] = []
        for recipient in recipients:  # names are looked up once per mailbox, then cached
            address = yield from self.addresses.resolve(recipient)
            self.remember_peer(thread, address)  # history() finds it before any answer
            addresses.append(address)
        gid = new_id()
        fires: list[FireRequest] = []
        pendings: dict[str, PendingReply] = {}
        yield StartReplies()
        for address in addresses:
            cid = new_id()
            _, payload = self.message_payload(
                body,
                kind="request",
                task=task,
                ttl=timeout,
                thread=thread,
                headers=headers,
                correlation_id=cid,
                reply_task=self.info.reply_task,
                message_id=cid,
                gather=gid,
            )
            fires.append(FireRequest(cue_id=address, payload_override=payload, idempotency_key=cid))
        deadline = self.clock() + timeout
        for recipient, fire in zip(recipients, fires, strict=True):
            pendings[recipient] = self.router.expect(str(fire.idempotency_key))
        try:
            fired = yield FireMany(fires)
            self.stats.count("sent", len(fired))
            self.stats.count("requests", len(fired))
            while True:
                replies = [p for p in pendings.values() if p.reply is not None]
                ok = sum(1 for p in replies if _is_reply(p))
                if ok >= goal or len(replies) == len(pendings):
                    break
                left = deadline - self.clock()
                if left <= 0:
                    break
                waiting = [p for p in pendings.values() if p.reply is None]
                self.router.share_event(waiting)
                if any(p.reply is not None for p in waiting):
                    continue  # one came while the event was swapped in
                yield AwaitReply(waiting[0], left)
        finally:
            for p in pendings.values():
                self.router.give_up(p.correlation_id)
        executions = {r: f.id for r, f in zip(recipients, fired, strict=True)}
        return (
            yield from self._receipts(gid, recipients, pendings, executions, goal, type, deadline)
        )

    def _receipts(
        self,
        gid: str,
        recipients: list[str],
        pendings: dict[str, PendingReply],
        executions: dict[str, str],
        goal: int,
        type: Any,
        deadline: float,
    ) -> Flow[GatherResult]:
        result = GatherResult(gather_id=gid)
        open_: list[str] = []
        for r in recipients:
            p = pendings[r]
            eid = executions[r]
            if p.reply is None:
                open_.append(r)
                continue
            try:
                result.replies[r] = unwrap(p.reply, type)
            except RemoteError as exc:
                result.receipts[r] = Receipt(r, "error", eid, p.correlation_id, str(exc), exc)
            except NoReply as exc:
                result.receipts[r] = Receipt(r, "no_reply", eid, p.correlation_id, str(exc), exc)
            else:
                self.stats.count("replies_received")
                result.receipts[r] = Receipt(r, "replied", eid, p.correlation_id, "replied")
        met = sum(1 for r in result.receipts.values() if r.state == "replied") >= goal
        if met:
            yield from self._withdraw(gid, open_, pendings, executions, result, deadline)
        else:
            for r in open_:
                cid = pendings[r].correlation_id
                try:
                    reason, detail = yield from self.diagnose(executions[r], cid)
                except NoReply as exc:  # settled without a reply, and its notice never came
                    result.receipts[r] = Receipt(r, "no_reply", executions[r], cid, str(exc), exc)
                    continue
                self.stats.count("timeouts")
                result.receipts[r] = Receipt(r, reason, executions[r], cid, detail)
        # One receipt per recipient, in the order given.
        ordered = {r: result.receipts[r] for r in recipients}
        result.receipts.clear()
        result.receipts.update(ordered)
        return result

    def _withdraw(
        self,
        gid: str,
        open_: list[str],
        pendings: dict[str, PendingReply],
        executions: dict[str, str],
        result: GatherResult,
        deadline: float,
    ) -> Flow[None]:
        """Withdraw the requests not needed any more: claim each one still free, close it."""
        outcomes: list[OutcomeRequest] = []
        held: list[str] = []  # correlation ids a responder already had
        for r in open_:
            eid, cid = executions[r], pendings[r].correlation_id
            try:
                yield ClaimById(eid, self.info.worker_id)
            except (ClaimFailed, NotFound) as exc:
                held.append(cid)
                detail = (
                    f"not needed any more; a responder already had it ({exc.message}): "
                    "its reply will come late and be dropped, and a responder that gets "
                    "it again skips it"
                )
            else:
                detail = "withdrawn before any responder claimed it: not needed any more"
                outcomes.append(
                    OutcomeRequest(
                        execution_id=eid,
                        success=False,
                        error=f"cancelled: gather {gid} had the replies it needed; withdrawn",
                        metadata=self._meta_state("cancelled", gather=gid, correlation_id=cid),
                    )
                )
            result.receipts[r] = Receipt(r, "cancelled", eid, cid, detail)
        if held:
            # Some could not be withdrawn: mark them, so a responder that gets one again skips it.
            _, marker = self.message_payload(
                {CANCELLED_KEY: held},
                task=marker_task(self.info.reply_task, gid),
                ttl=max(1.0, deadline - self.clock()),
                correlation_id=gid,
            )
            try:
                yield Fire(self.info.address, marker, idempotency_key=f"{gid}.cancelled")
            except CuemsgError as exc:
                log.warning("gather %s: the cancellation marker was not fired: %s", gid, exc)
        if outcomes:
            answers = yield RecordOutcomes(outcomes, self.info.worker_id)
            for item, answer in zip(outcomes, answers, strict=False):
                if isinstance(answer, CueAPIError):
                    log.warning("withdrawal of %s not recorded: %s", item.execution_id, answer)


def _is_reply(pending: PendingReply) -> bool:
    meta = pending.reply.meta if pending.reply is not None else None
    return meta is not None and meta.kind == "reply"


def _check_recipients(to: Sequence[str], timeout: float, need: int | None) -> list[str]:
    if isinstance(to, str):
        raise TypeError("gather takes a list of addresses, not one string")
    recipients = list(to)
    if not recipients:
        raise ValueError("gather needs at least one recipient")
    seen: set[str] = set()
    for r in recipients:
        if r in seen:
            raise ValueError(f"recipient {r!r} is listed twice: each gets one request")
        seen.add(r)
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, not {timeout}")
    if need is not None and not 1 <= need <= len(recipients):
        raise ValueError(f"need must be 1..{len(recipients)} (the recipients), not {need}")
    return recipients
