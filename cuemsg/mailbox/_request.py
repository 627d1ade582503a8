"""Request flows: `request`, why it timed out, responder checks and the reply loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from cuemsg._exceptions import (
    CueAPIError,
    CuemsgError,
    EnvelopeError,
    ExtensionNotAvailable,
    MailboxError,
    NoResponder,
    RequestTimeout,
)
from cuemsg.cueapi.models import Claimed, ClaimResult, Execution, OutcomeRequest
from cuemsg.envelope import decode_payload, new_id
from cuemsg.mailbox._config import (
    ACK_CARRY,
    PRESENCE_KEY,
    REPLY_ACK_DELAY,
    REPLY_BATCH,
    TimeoutReason,
)
from cuemsg.mailbox._helpers import TRANSIENT, cut, parse_time, pause_after
from cuemsg.mailbox._noreply import from_record
from cuemsg.mailbox._ops import (
    AwaitReply,
    CallHandler,
    Claim,
    Extensions,
    Fire,
    Flow,
    GetCue,
    GetExecution,
    IdleWait,
    ListWorkers,
    Pause,
    RecordOutcomes,
    StartReplies,
)
from cuemsg.mailbox._receive import ReceiveFlows
from cuemsg.mailbox._records import Delivery, Settled
from cuemsg.mailbox._replies import PendingReply, explain_timeout, reply_body, unwrap
from cuemsg.mailbox.ticket import Ticket

log = logging.getLogger("cuemsg.mailbox")


class RequestFlows(ReceiveFlows):
    """Request/reply: one reply stream per mailbox, routed by correlation id."""

    # -- request/reply ---------------------------------------------------------------------

    def request(
        self,
        to_cue: str,
        body: Any,
        *,
        timeout: float,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Flow[Any]:
        """Send a request and wait for its reply (see `Mailbox.request`)."""
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        to_cue = yield from self.addresses.resolve(to_cue)
        if require_responder:
            yield from self.check_responder(to_cue, task)
        # collect(submit(...)), on the in-process reply stream: no ticket record to keep.
        ticket, pending = yield from self.submit_streamed(
            to_cue, body, timeout=timeout, task=task, thread=thread, headers=headers
        )
        return (yield from self.collect_streamed(ticket, pending, timeout, type))

    def submit_streamed(
        self,
        to_cue: str,
        body: Any,
        *,
        timeout: float,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[tuple[Ticket, PendingReply]]:
        """Fire a request whose reply comes on this mailbox's reply stream (`request()`)."""
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        message_id = new_id()
        _, payload = self.message_payload(
            body,
            kind="request",
            task=task,
            ttl=timeout,
            thread=thread,
            headers=headers,
            correlation_id=message_id,
            reply_task=self.info.reply_task,
            message_id=message_id,
        )
        self.remember_peer(thread, to_cue)  # history() finds it before any answer
        deadline = self.clock() + timeout
        yield StartReplies()
        pending = self.router.expect(message_id)
        try:
            fired = yield from self.fire_to(
                to_cue, Fire(to_cue, payload, idempotency_key=message_id)
            )
        except BaseException:
            self.router.give_up(message_id)
            raise
        self.stats.count("sent")
        self.stats.count("requests")
        ticket = Ticket(
            correlation_id=message_id,
            request_execution_id=fired.id,
            to=to_cue,
            deadline=deadline,
            reply_cue_id=self.info.address,
            reply_task=self.info.reply_task,
        )
        return ticket, pending

    def collect_streamed(
        self, ticket: Ticket, pending: PendingReply, timeout: float, type: Any = None
    ) -> Flow[Any]:
        """Wait for a streamed request's reply until its deadline (`request()`)."""
        message_id = ticket.correlation_id
        try:
            yield AwaitReply(pending, max(0.0, ticket.deadline - self.clock()))
        finally:
            self.router.give_up(message_id)
        reply = pending.reply
        if reply is None:
            if self.router.closed:
                raise MailboxError(f"the mailbox closed while request {message_id} waited")
            reason, detail = yield from self.diagnose(ticket.request_execution_id, message_id)
            self.stats.count("timeouts")
            raise RequestTimeout(
                f"no reply to request {message_id} within {timeout:g}s: {detail}",
                correlation_id=message_id,
                reason=reason,
                execution_id=ticket.request_execution_id,
            )
        return unwrap(reply, type)

    def diagnose(self, execution_id: str, request_id: str) -> Flow[tuple[TimeoutReason, str]]:
        """Why a request got no reply, read from its execution's record.

        Raises:
            NoReply: it was acked or rejected without a reply (no timeout, then).
        """
        try:
            exe: Execution = yield GetExecution(execution_id)
        except CuemsgError as exc:
            return "unknown", f"its execution {execution_id} could not be read ({exc})"
        no_reply = from_record(exe, request_id)
        if no_reply is not None:
            raise no_reply
        return explain_timeout(exe, self.clock())

    def check_responder(self, to_cue: str, task: str | None) -> Flow[None]:
        """Raise `NoResponder` unless a worker serving the target's task heartbeated lately."""
        if task is None:
            task = self._tasks.get(to_cue)
            if task is None:
                cue = yield GetCue(to_cue)
                found = cue.payload.get("task")
                task = found if isinstance(found, str) else ""
                self._tasks[to_cue] = task
        now = self.clock()
        ttl = self.config.presence_ttl
        try:
            workers = yield ListWorkers()
        except ExtensionNotAvailable:
            # No worker registry to read: serving mailboxes stamp their cue instead.
            cue = yield GetCue(to_cue)
            stamp = cue.payload.get(PRESENCE_KEY)
            at = parse_time(stamp.get("at")) if isinstance(stamp, dict) else None
            alive = at is not None and now - at <= ttl
        else:
            alive = any(
                task in w.handlers
                and (seen := parse_time(w.last_heartbeat)) is not None
                and now - seen <= ttl
                for w in workers
            )
        if not alive:
            raise NoResponder(
                f"no worker serving task {task!r} (cue {to_cue}) was seen in the last {ttl:g}s"
            )

    def reply_loop(self) -> Flow[None]:
        """Claim this mailbox's replies and route them to waiting requests, until close.

        The loop long-polls only while requests are waiting: an idle
        requester costs no requests. Replies that come after their request
        gave up are picked up by the next poll (or `drain_replies` at close).
        With `claim.settle` the acks of the replies routed so far ride on the
        next claim; only those left when no request waits are recorded apart.
        """
        carry = "claim.settle" in (yield Extensions())
        failures = 0
        while not self.closing:
            try:
                if self.reply_acks and self.monotonic() >= self.reply_acks_due:
                    yield from self.flush_reply_acks()
                if not self.router:
                    yield IdleWait(self._reply_wait())
                    continue
                claims = yield from self.claim_replies(carry, wait=True)
                if claims:
                    yield from self.route_replies(claims)
                failures = 0
            except CuemsgError as exc:
                failures += 1
                log.warning("reply loop: %s", exc)
                yield Pause(pause_after(exc, failures))
        yield from self.flush_reply_acks()

    def _reply_wait(self) -> float:
        """How long the reply loop may wait now: no later than the waiting acks are due."""
        if not self.reply_acks:
            return self.config.poll_wait
        return max(0.0, min(self.config.poll_wait, self.reply_acks_due - self.monotonic()))

    def drain_replies(self) -> Flow[None]:
        """Settle the replies already waiting (all late by now): one claim, no wait."""
        carry = "claim.settle" in (yield Extensions())
        claims = yield from self.claim_replies(carry, wait=False)
        if claims:
            yield from self.route_replies(claims)
        yield from self.flush_reply_acks()

    def claim_replies(self, carry: bool, *, wait: bool) -> Flow[list[Claimed]]:
        """Claim waiting replies (long-polling if `wait`); with `carry` (`claim.settle`)
        the waiting reply acks ride on the claim, recorded before it.

        Acks a claim could not deliver (a transient failure) wait, first in
        line, for the next claim or flush; acks of a claim refused as a whole
        are dropped with a warning: their replies come again when their
        leases run out, and are acked then as duplicates.
        """
        if not carry or not self.reply_acks:
            poll = self._reply_wait() if wait else None
            return (yield from self.claim(self.info.reply_task, poll, REPLY_BATCH, hold=False))
        send, self.reply_acks = self.reply_acks[:ACK_CARRY], self.reply_acks[ACK_CARRY:]
        claim = Claim(
            self.info.worker_id,
            self.info.reply_task,
            self._reply_wait() if wait else None,  # no sooner than the acks left over are due
            REPLY_BATCH,
            tuple(send),
        )
        try:
            result: ClaimResult = yield claim
        except TRANSIENT as exc:
            self.reply_acks[:0] = send
            log.warning("claiming replies failed (%s); trying again", exc)
            yield Pause(pause_after(exc, 1))
            return []
        except CuemsgError as exc:
            log.warning(
                "the acks of %d replies were not recorded (%s): they come again", len(send), exc
            )
            raise
        self._replies_acked(send, result.settled)
        return list(result.executions)

    @staticmethod
    def _replies_acked(outcomes: Sequence[OutcomeRequest], answers: Sequence[Any]) -> None:
        for item, answer in zip(outcomes, answers, strict=False):
            if isinstance(answer, CueAPIError):
                log.warning("outcome of reply %s not recorded: %s", item.execution_id, answer)

    def flush_reply_acks(self) -> Flow[None]:
        """Record the waiting reply acks in one `report_outcomes` (one request per 100).

        A reply whose ack is lost (in transit, or the process dies first) is
        claimed again after its lease and acked then as a duplicate.
        """
        outcomes, self.reply_acks = self.reply_acks, []
        if not outcomes:
            return
        answers = yield RecordOutcomes(outcomes, self.info.worker_id)
        self._replies_acked(outcomes, answers)

    def route_replies(self, claims: Sequence[Claimed]) -> Flow[None]:
        """Hand claimed replies to their requests; queue each one's ack with what became
        of it (recorded by `flush_reply_acks` within `REPLY_ACK_DELAY`)."""
        outcomes: list[OutcomeRequest] = []
        late: list[Delivery[Any]] = []
        for claimed in claims:
            eid = claimed.execution_id
            try:
                env = decode_payload(claimed.payload)
            except EnvelopeError as exc:
                self.stats.count("bad")
                outcomes.append(
                    OutcomeRequest(
                        execution_id=eid,
                        success=False,
                        error=cut(f"rejected: not a readable cuemsg reply: {exc}"),
                        metadata=self._meta_state("rejected", reason="bad_envelope"),
                    )
                )
                continue
            meta = env.meta
            cid = meta.correlation_id if meta is not None else None
            if meta is None or cid is None or meta.kind not in ("reply", "error"):
                self.stats.count("bad")
                outcomes.append(
                    OutcomeRequest(
                        execution_id=eid,
                        success=False,
                        error="rejected: not a reply (no correlation id); dropped",
                        metadata=self._meta_state("rejected", reason="not_a_reply"),
                    )
                )
                continue
            verdict = self.router.deliver(cid, env, eid)
            if verdict == "delivered":
                self.stats.count("replies_received")
                text = f"reply delivered to the waiting request {cid}"
            elif verdict == "duplicate":
                self.stats.count("duplicates")
                text = f"duplicate reply to request {cid} (already answered); dropped"
            else:
                self.stats.count("late_replies")
                log.warning("late reply to request %s (execution %s): dropped", cid, eid)
                text = f"late reply: request {cid} had stopped waiting; dropped"
                late.append(
                    self.make_message(
                        body=reply_body(env),
                        envelope=env,
                        claimed=claimed,
                        mailbox_address=self.info.address,
                        settled=Settled.LATE,
                    )
                )
            outcomes.append(
                OutcomeRequest(
                    execution_id=eid,
                    success=True,
                    result=text,
                    metadata=self._meta_state(verdict, correlation_id=cid, id=meta.id),
                )
            )
        # The requests already have their replies: the acks wait for company.
        if not self.reply_acks:
            self.reply_acks_due = self.monotonic() + REPLY_ACK_DELAY
        self.reply_acks.extend(outcomes)
        if len(self.reply_acks) >= REPLY_BATCH:
            yield from self.flush_reply_acks()
        callback = self.config.on_late_reply
        if callback is not None:
            for msg in late:
                try:
                    yield CallHandler(callback, msg)
                except Exception:
                    log.exception("on_late_reply raised")
