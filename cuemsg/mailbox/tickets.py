"""Durable request flows: `submit`, `collect`, `status`, `pending` and `sweep`.

`submit` fires the request, then a *ticket record* on the requester's own
cue (task `<task>.tickets`) that names the request's execution. The record
is what makes a ticket durable: it is pending while the ticket is
outstanding (`pending()` lists those, from the server), and its outcome
says when and by which worker the reply was collected, or that it expired.
The reply has a task of its own (`<task>.replies.<correlation id>`), so
any process that opens the mailbox claims exactly that reply: one `claim`
with `claim.task`, list + claim by id on the plain contract.

Expiry is settled by the requester's mailbox, not by the server: the
server knows nothing of cuemsg deadlines (the hosted one has only its
unclaimed timeout). `collect` and `status` settle their own ticket once
its deadline has passed; `sweep()` (run by `pending()`) settles every
expired ticket record and every reply on the mailbox's cue whose request
has expired (a reply carries its request's deadline), each with an outcome
saying so. Nothing expired is ever listed as waiting.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from cuemsg._exceptions import (
    AlreadyCollected,
    ClaimFailed,
    CueAPIError,
    EnvelopeError,
    MailboxError,
    NoReply,
    NotFound,
    ReplyNotReady,
    RequestTimeout,
)
from cuemsg.cueapi.models import Claimed, Execution, ExecutionList, OutcomeRequest
from cuemsg.envelope import Envelope, decode_payload, new_id, outcome_meta_of, utcnow
from cuemsg.mailbox._config import REPLY_SUFFIX
from cuemsg.mailbox._helpers import cut
from cuemsg.mailbox._ops import (
    ClaimById,
    Fire,
    Flow,
    GetExecution,
    ListExecutions,
    RecordOutcomes,
)
from cuemsg.mailbox._replies import unwrap
from cuemsg.mailbox._request import RequestFlows
from cuemsg.mailbox.ticket import Ticket, TicketStatus

log = logging.getLogger("cuemsg.mailbox")

#: Task suffix of the ticket records on the requester's cue.
TICKETS_SUFFIX = ".tickets"
#: Key of a ticket record's body that holds the ticket.
RECORD_KEY = "cuemsg_ticket"
#: Executions listed per request by `sweep`.
SWEEP_PAGE = 100


class TicketFlows(RequestFlows):
    """Durable requests: a ticket outlives the process that submitted it."""

    @property
    def tickets_task(self) -> str:
        """The task of this mailbox's ticket records (never claimed by a receive loop)."""
        return f"{self.info.task}{TICKETS_SUFFIX}"

    def _check_ticket(self, ticket: Ticket) -> None:
        if not isinstance(ticket, Ticket):
            raise TypeError(f"expected a Ticket (Ticket.parse(text) reads one), not {ticket!r}")
        if ticket.reply_cue_id != self.info.address:
            raise MailboxError(
                f"ticket {ticket.correlation_id} belongs to the mailbox {ticket.reply_cue_id}, "
                f"not to {self.info.name!r} ({self.info.address}): open that mailbox to collect it"
            )

    # -- submit ----------------------------------------------------------------------------

    def submit(
        self,
        to_cue: str,
        body: Any,
        *,
        timeout: float,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[Ticket]:
        """Fire a request, then its ticket record on this mailbox's cue; the `Ticket`."""
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        to_cue = yield from self.addresses.resolve(to_cue)
        cid = new_id()
        reply_task = f"{self.info.task}{REPLY_SUFFIX}.{cid}"
        _, request = self.message_payload(
            body,
            kind="request",
            task=task,
            ttl=timeout,
            thread=thread,
            headers=headers,
            correlation_id=cid,
            reply_task=reply_task,
            message_id=cid,
        )
        self.remember_peer(thread, to_cue)  # history() finds it before any answer
        deadline = self.clock() + timeout
        # The request first: its record names its execution (one batch could not).
        fired = yield from self.fire_to(to_cue, Fire(to_cue, request, idempotency_key=cid))
        self.stats.count("sent")
        self.stats.count("requests")
        ticket = Ticket(
            correlation_id=cid,
            request_execution_id=fired.id,
            to=to_cue,
            deadline=deadline,
            reply_cue_id=self.info.address,
            reply_task=reply_task,
        )
        _, record = self.message_payload(
            {RECORD_KEY: ticket}, task=self.tickets_task, ttl=timeout, correlation_id=cid
        )
        kept = yield Fire(self.info.address, record, idempotency_key=f"{cid}.ticket")
        return msgspec.structs.replace(ticket, record_execution_id=kept.id)

    # -- collect ---------------------------------------------------------------------------

    def collect(self, ticket: Ticket, *, wait: float | None, type: Any = None) -> Flow[Any]:
        """The reply of `ticket`, claimed once and for all (see `Mailbox.collect`)."""
        self._check_ticket(ticket)
        if wait is not None and wait < 0:
            raise ValueError(f"wait must be >= 0, not {wait}")
        end = None if wait is None else self.clock() + wait
        checked = False
        while True:
            now = self.clock()
            left = ticket.deadline - now
            if end is not None:
                left = min(left, end - now)
            hold = min(left, self.config.poll_wait)
            claims = yield from self.claim(
                ticket.reply_task, hold if hold > 0 else None, None, hold=False
            )
            if claims:
                return (yield from self._take_reply(ticket, claims[0], type))
            if not checked:
                yield from self._check_record(ticket)
                checked = True
            now = self.clock()
            if now >= ticket.deadline:
                yield from self._expire(ticket)
            if end is not None and now >= end:
                raise ReplyNotReady(
                    f"no reply to ticket {ticket.correlation_id} yet (waited {wait:g}s; "
                    f"its deadline is {ticket.expires_at.isoformat()}): collect it again later",
                    correlation_id=ticket.correlation_id,
                )

    def _take_reply(self, ticket: Ticket, claimed: Claimed, type: Any) -> Flow[Any]:
        """Settle a claimed reply (and the ticket's record) as collected; its body."""
        eid = claimed.execution_id
        cid = ticket.correlation_id
        env: Envelope | None = None
        try:
            env = decode_payload(claimed.payload)
        except EnvelopeError as exc:
            problem = f"not a readable cuemsg reply: {exc}"
        else:
            ok = env.meta is not None and env.meta.correlation_id == cid
            problem = "" if ok else f"not the reply to ticket {cid}"
        if env is None or problem:
            yield RecordOutcomes(
                [
                    OutcomeRequest(
                        execution_id=eid,
                        success=False,
                        error=cut(f"rejected: {problem}"),
                        metadata=self._meta_state("rejected", reason="not_the_reply"),
                    )
                ],
                self.info.worker_id,
            )
            raise MailboxError(f"execution {eid} on the reply task of ticket {cid} is {problem}")
        late = self.clock() > ticket.deadline
        state = "expired" if late else "collected"
        at = utcnow().isoformat()
        worker = self.info.worker_id
        metadata = self._meta_state(
            state, correlation_id=cid, collected_by=worker, collected_at=at, reply_execution_id=eid
        )
        text = (
            f"expired: the reply came before, but was collected after the deadline "
            f"{ticket.expires_at.isoformat()}; not handed over"
            if late
            else f"collected by worker {worker} at {at}"
        )
        outcomes = [OutcomeRequest(execution_id=eid, success=True, result=text, metadata=metadata)]
        record = yield from self._claim_record(ticket)
        if record is not None:
            outcomes.append(
                OutcomeRequest(execution_id=record, success=True, result=text, metadata=metadata)
            )
        answers = yield RecordOutcomes(outcomes, worker)
        if answers and isinstance(answers[0], CueAPIError):
            raise MailboxError(f"the reply to ticket {cid} could not be settled: {answers[0]}")
        if late:
            self.stats.count("timeouts")
            raise RequestTimeout(
                f"ticket {cid}: {text}",
                correlation_id=cid,
                reason="expired",
                execution_id=ticket.request_execution_id,
            )
        self.stats.count("replies_received")
        assert env is not None  # an unreadable one was rejected above
        return unwrap(env, type)

    def _claim_record(self, ticket: Ticket) -> Flow[str | None]:
        """Claim the ticket's record to close it; None if there is none or it is taken."""
        if ticket.record_execution_id is None:
            return None
        try:
            yield ClaimById(ticket.record_execution_id, self.info.worker_id)
        except (ClaimFailed, NotFound) as exc:
            log.info("ticket record %s not claimed: %s", ticket.record_execution_id, exc)
            return None
        return ticket.record_execution_id

    def _check_record(self, ticket: Ticket) -> Flow[None]:
        """Raise if the ticket's record says it was collected, or settled as expired."""
        if ticket.record_execution_id is None:
            return
        exe: Execution = yield GetExecution(ticket.record_execution_id)
        meta = outcome_meta_of(exe.outcome)
        if meta.get("state") == "collected":
            raise AlreadyCollected(
                ticket.correlation_id,
                str(meta.get("collected_by", "?")),
                str(meta.get("collected_at", "?")),
            )
        if meta.get("state") == "expired":
            reason = str(meta.get("reason", "expired"))
            raise RequestTimeout(
                f"ticket {ticket.correlation_id} expired: {(exe.outcome or {}).get('result', '')}",
                correlation_id=ticket.correlation_id,
                reason=reason,
                execution_id=ticket.request_execution_id,
            )

    def _expire(self, ticket: Ticket) -> Flow[None]:
        """The deadline passed with no reply: settle the record as expired, and raise."""
        ended: NoReply | None = None
        try:
            reason, detail = yield from self.diagnose(
                ticket.request_execution_id, ticket.correlation_id
            )
        except NoReply as exc:  # settled without a reply (and its notice never came)
            ended, reason, detail = exc, "unknown", str(exc)
        record = yield from self._claim_record(ticket)
        text = f"expired: no reply by the deadline {ticket.expires_at.isoformat()}: {detail}"
        if record is not None:
            yield RecordOutcomes(
                [
                    OutcomeRequest(
                        execution_id=record,
                        success=True,
                        result=cut(text),
                        metadata=self._meta_state(
                            "expired",
                            correlation_id=ticket.correlation_id,
                            reason="no_reply" if ended is not None else reason,
                        ),
                    )
                ],
                self.info.worker_id,
            )
        if ended is not None:
            raise ended
        self.stats.count("timeouts")
        raise RequestTimeout(
            f"ticket {ticket.correlation_id} {text}",
            correlation_id=ticket.correlation_id,
            reason=reason,
            execution_id=ticket.request_execution_id,
        )

    # -- status ----------------------------------------------------------------------------

    def status(self, ticket: Ticket) -> Flow[TicketStatus]:
        """Where the ticket's request is, from the server's records; consumes nothing."""
        self._check_ticket(ticket)
        if ticket.record_execution_id is not None:
            rec: Execution = yield GetExecution(ticket.record_execution_id)
            meta = outcome_meta_of(rec.outcome)
            if meta.get("state") == "collected":
                by, at = str(meta.get("collected_by")), str(meta.get("collected_at"))
                return TicketStatus(
                    "collected",
                    f"the reply was collected at {at} by worker {by}",
                    collected_by=by,
                    collected_at=at,
                )
            if meta.get("state") == "expired":
                said = (rec.outcome or {}).get("result") or "expired"
                return TicketStatus("expired", str(said))
        req: Execution = yield GetExecution(ticket.request_execution_id)
        status = _request_status(req)
        if status.state in ("waiting", "in_progress", "answered") and (
            self.clock() > ticket.deadline
        ):
            return TicketStatus(
                "expired",
                f"its deadline {ticket.expires_at.isoformat()} passed ({status.detail})",
                worker=status.worker,
                attempts=status.attempts,
            )
        return status

    # -- pending and sweep -----------------------------------------------------------------

    def pending(self) -> Flow[list[Ticket]]:
        """This mailbox's outstanding tickets, from the server (expired ones are settled)."""
        return (yield from self._sweep())[0]

    def sweep(self) -> Flow[int]:
        """Settle expired ticket records and uncollected expired replies; how many."""
        return (yield from self._sweep())[1]

    def _sweep(self) -> Flow[tuple[list[Ticket], int]]:
        rows: list[Execution] = []
        offset = 0
        while True:
            page: ExecutionList = yield ListExecutions(
                self.info.address, "pending", offset, SWEEP_PAGE
            )
            rows.extend(page.executions)
            offset += len(page.executions)
            if not page.executions or offset >= page.total:
                break
        now = self.clock()
        reply_prefix = f"{self.info.task}{REPLY_SUFFIX}."
        outstanding: list[Ticket] = []
        expired: list[tuple[str, str, str]] = []  # (execution id, why, reason)
        for exe in rows:
            if exe.payload is None:  # a server that lists no payloads: read each one
                exe = yield GetExecution(exe.id)
            task = exe.task or ""
            if task == self.tickets_task:
                ticket = _ticket_of(exe)
                if ticket is None:
                    continue
                if ticket.deadline > now:
                    outstanding.append(ticket)
                else:
                    code: str
                    try:
                        code, detail = yield from self.diagnose(
                            ticket.request_execution_id, ticket.correlation_id
                        )
                    except NoReply as exc:
                        code, detail = "no_reply", str(exc)
                    why = f"ticket {ticket.correlation_id}: no reply collected ({detail})"
                    expired.append((exe.id, why, code))
            elif task.startswith(reply_prefix):
                try:
                    env = decode_payload(exe.payload)
                except EnvelopeError:
                    continue
                if env.expires_at is not None and env.expires_at < now and env.meta is not None:
                    why = f"{env.meta.kind} for {env.meta.correlation_id}: not collected"
                    expired.append((exe.id, why, "expired"))
        outcomes: list[OutcomeRequest] = []
        for eid, why, code in expired:
            try:
                yield ClaimById(eid, self.info.worker_id)
            except (ClaimFailed, NotFound):
                continue  # settled or being settled by another process
            outcomes.append(
                OutcomeRequest(
                    execution_id=eid,
                    success=True,
                    result=cut(f"expired: {why} by its deadline; settled by the requester"),
                    metadata=self._meta_state("expired", reason=code),
                )
            )
        settled = 0
        if outcomes:
            answers = yield RecordOutcomes(outcomes, self.info.worker_id)
            settled = sum(1 for a in answers if not isinstance(a, CueAPIError))
            self.stats.count("expired", settled)
        outstanding.sort(key=lambda t: (t.deadline, t.correlation_id))
        return outstanding, settled


def _ticket_of(exe: Execution) -> Ticket | None:
    """The ticket a record execution holds (None if it holds none)."""
    try:
        env = decode_payload(exe.payload)
    except EnvelopeError:
        return None
    body = env.message.get(RECORD_KEY) if isinstance(env.message, dict) else None
    if not isinstance(body, dict):
        return None
    try:
        draft = msgspec.convert(body, Ticket)
    except msgspec.ValidationError:
        return None
    return Ticket(
        correlation_id=draft.correlation_id,
        request_execution_id=draft.request_execution_id,
        to=draft.to,
        deadline=draft.deadline,
        reply_cue_id=draft.reply_cue_id,
        reply_task=draft.reply_task,
        record_execution_id=exe.id,
    )


def _request_status(req: Execution) -> TicketStatus:
    """A ticket's state read from its request's execution (the reply not collected yet)."""
    meta = outcome_meta_of(req.outcome)
    worker = req.claimed_by_worker
    n = req.attempts
    if req.status in ("pending", "retry_ready"):
        detail = (
            "no responder has claimed it yet"
            if n == 0
            else f"back in the queue after {n} claim(s) whose responders lost the lease"
        )
        return TicketStatus("waiting", detail, worker=worker, attempts=n)
    if req.status == "delivering":
        return TicketStatus(
            "in_progress", f"worker {worker} is handling it", worker=worker, attempts=n
        )
    state = meta.get("state")
    if state in ("replied", "replied_error"):
        error = state == "replied_error"
        what = "an error reply" if error else "a reply"
        return TicketStatus(
            "answered",
            f"{what} waits to be collected (execution {meta.get('reply_execution_id')})",
            worker=worker,
            attempts=n,
            error=error,
        )
    if state == "expired":
        return TicketStatus(
            "expired", "the responder skipped it: its deadline had passed", worker=worker
        )
    said = (req.outcome or {}).get("error") or (req.outcome or {}).get("result")
    detail = (
        f"it ended {req.status}: {said}"
        if said
        else f"it ended {req.status} with no reply after {n} claim(s)"
    )
    return TicketStatus("failed", detail, worker=worker, attempts=n)
