"""Settle flows: ack, reject, retry-later, reply, lease renewal and batched acks."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from cuemsg._exceptions import (
    AlreadySettled,
    Conflict,
    CueAPIError,
    CuemsgError,
    Forbidden,
    MailboxError,
    NotFound,
)
from cuemsg.cueapi.models import REPLY_TOKEN, FireRequest, OutcomeRequest
from cuemsg.envelope import (
    NAMESPACE,
    ErrorBody,
    Kind,
    from_timestamp,
    payload_bytes,
    with_attempt,
)
from cuemsg.mailbox._config import ACK_TRIES, MAX_CACHED_REPLY
from cuemsg.mailbox._helpers import TRANSIENT, cut, pause_after
from cuemsg.mailbox._leases import PendingAck
from cuemsg.mailbox._noreply import notice_body
from cuemsg.mailbox._ops import (
    Extensions,
    Fire,
    Flow,
    Pause,
    RecordOutcome,
    RecordOutcomes,
    RecordReply,
    RenewLease,
)
from cuemsg.mailbox._records import CachedReply, Delivery, Settled
from cuemsg.mailbox._send import SendFlows

log = logging.getLogger("cuemsg.mailbox")


class SettleFlows(SendFlows):
    """Settling: the outcome of each delivered message, and what a lost lease means."""

    def _settle_eid(
        self,
        execution_id: str,
        message_id: str,
        *,
        success: bool,
        result: str | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Flow[None]:
        """Record an execution's outcome; a refusal means the lease was lost."""
        try:
            why = self.leases.lost(execution_id)
            if why is not None:
                raise self._lease_lost(execution_id, message_id, why)
            try:
                yield RecordOutcome(
                    execution_id,
                    self.info.worker_id,
                    success,
                    cut(result),
                    cut(error),
                    metadata,
                )
            except (Forbidden, Conflict, NotFound) as exc:
                raise self._lease_lost(execution_id, message_id, exc) from exc
        finally:
            self.leases.release(execution_id)

    def _msg_state(self, msg: Delivery[Any], state: str, **extra: Any) -> dict[str, Any]:
        """An outcome's metadata for `msg`, with what the busy policy did to it."""
        return self._meta_state(state, **extra, **msg.notes)

    def _acked_state(self, msg: Delivery[Any]) -> dict[str, Any]:
        """`_msg_state(msg, "acked", id=msg.id, kind=msg.kind)`: every message's ack has
        one, so the common case (no busy-policy notes; id and kind are always set) is
        written out."""
        if msg.notes:
            return self._msg_state(msg, "acked", id=msg.id, kind=msg.kind)
        return {NAMESPACE: {"state": "acked", "id": msg.id, "kind": msg.kind}}

    # -- settling --------------------------------------------------------------------------

    def _begin(self, msg: Delivery[Any], how: Settled) -> None:
        _check_unsettled(msg)
        msg.settled = how

    def ack(self, msg: Delivery[Any], result: str | None = None) -> Flow[None]:
        """Outcome success: the message was handled (recorded for dedupe first)."""
        self._begin(msg, Settled.ACKED)
        self.dedupe.remember(self._dedupe_key(msg.id))
        yield from self._settle_eid(
            msg.execution_id,
            msg.id,
            success=True,
            result=result or f"handled message {msg.id}",
            metadata=self._acked_state(msg),
        )
        self.stats.count("acked")
        yield from self._tell_no_reply(msg, "acked", None)

    def reject(self, msg: Delivery[Any], reason: str) -> Flow[None]:
        """Outcome failure, terminal: the message shows in the dead letters with `reason`.

        A rejected request's requester is told at once (it raises `NoReply`).
        """
        self._begin(msg, Settled.REJECTED)
        yield from self._settle_eid(
            msg.execution_id,
            msg.id,
            success=False,
            error=f"rejected: {reason}",
            metadata=self._msg_state(msg, "rejected", id=msg.id, kind=msg.kind),
        )
        self.stats.count("rejected")
        yield from self._tell_no_reply(msg, "rejected", reason)

    def _tell_no_reply(self, msg: Delivery[Any], settled: str, reason: str | None) -> Flow[None]:
        """Tell a request's requester it was settled without a reply (see `_noreply`).

        Sent after the outcome is recorded, so it is true once said. A notice
        that cannot be sent is logged: the requester learns at its deadline.
        """
        if not (msg.is_request and msg.reply_cue_id and msg.reply_task):
            return
        body = notice_body(
            request_id=msg.correlation_id or msg.id,
            worker_id=self.info.worker_id,
            settled=settled,
            reason=reason,
            execution_id=msg.execution_id,
        )
        meta, payload = self.message_payload(
            body,
            kind="error",
            task=msg.reply_task,
            thread=msg.thread,
            correlation_id=msg.correlation_id or msg.id,
        )
        try:
            yield Fire(msg.reply_cue_id, payload, idempotency_key=meta.id)
        except CuemsgError as exc:
            log.warning(
                "could not tell the requester of %s that no reply will come (%s); "
                "it learns at its deadline",
                msg.id,
                exc,
            )
            return
        self.stats.count("sent")

    def retry_later(self, msg: Delivery[Any], delay: float, reason: str = "") -> Flow[str | None]:
        """Fire the same message again at now + `delay` (attempt + 1); close this execution.

        Past `max_attempts` the message is rejected instead (a request gets
        an error reply). Answers the new execution's id (None when rejected).
        """
        if msg.attempt >= self.config.max_attempts:
            why = f"gave up after {msg.attempt} attempts" + (f": {reason}" if reason else "")
            yield from self.reject(msg, why)
            return None
        self._begin(msg, Settled.RETRIED)
        attempt = msg.attempt + 1
        payload = with_attempt(msg.payload, attempt, message_id=msg.id)
        when = from_timestamp(self.clock() + max(delay, 0.0))
        try:
            fired = yield Fire(
                msg.cue_id, payload, idempotency_key=f"{msg.id}.retry{attempt}", send_at=when
            )
        except BaseException:
            msg.settled = None
            raise
        yield from self._settle_eid(
            msg.execution_id,
            msg.id,
            success=True,
            result=cut(
                f"retry later: re-fired as execution {fired.id} (attempt {attempt}) "
                f"for {when.isoformat()}" + (f"; reason: {reason}" if reason else "")
            ),
            metadata=self._msg_state(
                msg, "retried", id=msg.id, next_execution_id=fired.id, attempt=attempt
            ),
        )
        self.stats.count("retried")
        return str(fired.id)

    def reply(self, msg: Delivery[Any], body: Any) -> Flow[str]:
        """Answer `msg`: fire the reply to its sender, then ack it naming the reply.

        A request's reply goes to its `reply_task` (the requester's reply
        stream); a reply to a plain message is an ordinary message to the
        sender's mailbox. Answers the reply's execution id.
        """
        return self._answer(msg, body=body, error=None)

    def reply_error(self, msg: Delivery[Any], type: str, message: str) -> Flow[str]:
        """Answer a request with an error: its requester raises `RemoteError(type, message)`."""
        return self._answer(msg, body=None, error=ErrorBody(type=type, message=message))

    def _answer(self, msg: Delivery[Any], *, body: Any, error: ErrorBody | None) -> Flow[str]:
        if not msg.reply_cue_id:
            raise MailboxError(f"message {msg.id} names no reply_cue_id: nobody to reply to")
        _check_unsettled(msg)
        kind: Kind = ("error" if error is not None else "reply") if msg.is_request else "message"
        reply_task = msg.reply_task if msg.is_request else None
        # A request's reply expires with the request: past it, the requester's mailbox
        # settles an uncollected reply as expired (`sweep`) instead of leaving it pending.
        expires = msg.expires_at.timestamp() if msg.is_request and msg.expires_at else None
        meta, payload = self.message_payload(
            body if error is None else error,
            kind=kind,
            task=reply_task,
            ttl=None if expires is None else expires - self.clock(),
            thread=msg.thread,
            correlation_id=msg.correlation_id or msg.id,
        )  # may raise EnvelopeError: the message stays unsettled
        self._begin(msg, Settled.REPLIED)
        what = f"error reply {error.type}: {error.message}" if error is not None else "reply"
        state = "replied" if error is None else "replied_error"

        def outcome(reply_eid: str) -> tuple[str, dict[str, Any]]:
            text = f"replied: {what} sent as execution {reply_eid} "
            text += f"(correlation id {meta.correlation_id})"
            metadata = self._msg_state(
                msg,
                state,
                id=msg.id,
                reply_id=meta.id,
                reply_execution_id=reply_eid,
                correlation_id=meta.correlation_id,
            )
            return text, metadata

        exts = yield Extensions()
        if "outcome.reply" in exts:
            # One request, one transaction: the reply and this outcome, or neither.
            reply = FireRequest(
                cue_id=msg.reply_cue_id, payload_override=payload, idempotency_key=meta.id
            )
            text, metadata = outcome(REPLY_TOKEN)
            fired_id = yield from self._settle_with_reply(
                msg, reply, success=error is None, text=text, metadata=metadata
            )
        else:
            try:
                fired = yield Fire(msg.reply_cue_id, payload, idempotency_key=meta.id)
            except BaseException:
                msg.settled = None
                raise
            fired_id = str(fired.id)
        self.stats.count("sent")
        encoded = payload_bytes(payload)
        record = CachedReply(
            cue_id=msg.reply_cue_id,
            key=meta.id,
            execution_id=fired_id,
            payload=msgspec.Raw(encoded if len(encoded) <= MAX_CACHED_REPLY else b"null"),
        )
        self.dedupe.remember(self._dedupe_key(msg.id), msgspec.json.encode(record))
        if "outcome.reply" not in exts:
            text, metadata = outcome(fired_id)
            if error is None:
                yield from self._settle_eid(
                    msg.execution_id, msg.id, success=True, result=text, metadata=metadata
                )
            else:
                yield from self._settle_eid(
                    msg.execution_id, msg.id, success=False, error=text, metadata=metadata
                )
        self.stats.count("replied")
        return fired_id

    def _settle_with_reply(
        self,
        msg: Delivery[Any],
        reply: FireRequest,
        *,
        success: bool,
        text: str,
        metadata: dict[str, Any],
    ) -> Flow[str]:
        """Fire `reply` and settle `msg` in one request; answers the reply's execution id.

        A refusal of the outcome is a lost lease (nothing was fired); any other
        failure leaves `msg` unsettled and held, as a failed fire does.
        """
        eid = msg.execution_id
        why = self.leases.lost(eid)
        if why is not None:
            self.leases.release(eid)
            raise self._lease_lost(eid, msg.id, why)
        try:
            answer = yield RecordReply(
                eid,
                self.info.worker_id,
                success,
                reply,
                result=cut(text) if success else None,
                error=None if success else cut(text),
                metadata=metadata,
            )
        except (Forbidden, Conflict, NotFound) as exc:
            if isinstance(exc, NotFound) and exc.code != "execution_not_found":
                msg.settled = None  # the reply's cue is gone: nothing happened
                raise
            self.leases.release(eid)
            raise self._lease_lost(eid, msg.id, exc) from exc
        except BaseException:
            msg.settled = None
            raise
        self.leases.release(eid)
        if answer.reply is None:  # a server that listed the extension must answer it
            raise MailboxError(f"the outcome of {eid} did not name the reply it fired")
        return str(answer.reply.id)

    def heartbeat(self, msg: Delivery[Any]) -> Flow[None]:
        """Renew `msg`'s lease now (background heartbeats do this on their own)."""
        try:
            yield RenewLease(msg.execution_id, self.info.worker_id)
        except (Forbidden, Conflict, NotFound) as exc:
            raise self._lease_lost(msg.execution_id, msg.id, exc) from exc

    # -- batched acks ----------------------------------------------------------------------

    def queue_ack(self, msg: Delivery[Any], delay: float) -> int:
        """Decide `msg`'s ack now, record it with the next batch (at most `delay` s later).

        The id goes into the dedupe store at once, as `ack()` does, so a
        redelivery after a crash is known as a duplicate. The lease stays held
        (and renewed) until the batch is answered. Answers the acks waiting now.

        Raises:
            LeaseLost: the lease is already known lost (nothing is queued).
            AlreadySettled: already settled.
        """
        self._begin(msg, Settled.ACKED)
        self.dedupe.remember(self._dedupe_key(msg.id))
        eid = msg.execution_id
        why = self.leases.lost(eid)
        if why is not None:
            try:
                raise self._lease_lost(eid, msg.id, why)
            finally:
                self.leases.release(eid)
        outcome = OutcomeRequest(
            execution_id=eid,
            success=True,
            result=cut(f"handled message {msg.id}"),
            metadata=self._acked_state(msg),
        )
        return self.acks.add(PendingAck(outcome, msg.id, self.monotonic() + delay))

    def flush_acks(self, *, final: bool = False) -> Flow[None]:
        """Record the waiting acks with one `report_outcomes` (one request per 100).

        An item refused with 403/409/404 is a lost lease: logged, counted in
        `stats.redelivered`, never counted as acked. A report that fails in
        transit is tried again later (`final`: now, after a pause) up to
        `ACK_TRIES` times; the leases stay held meanwhile.
        """
        failures = 0
        while True:
            failed = yield from self._flush_once()
            if failed is None or not final or not self.acks:
                return
            failures += 1
            yield Pause(pause_after(failed, failures))

    def _flush_once(self) -> Flow[Exception | None]:
        """One report of every waiting ack; the transit error when it must be tried again."""
        send = self.take_acks()
        if not send:
            return None
        try:
            answers = yield RecordOutcomes([item.outcome for item in send], self.info.worker_id)
        except TRANSIENT as exc:
            return exc if self.acks_not_sent(send, exc) else None
        except CuemsgError as exc:
            self.acks_refused(send, exc)
            return None
        self.acks_answered(send, answers)
        return None

    def take_acks(self) -> list[PendingAck]:
        """The waiting acks to record now (those whose lease is known lost are dropped)."""
        send: list[PendingAck] = []
        for item in self.acks.take():
            eid = item.outcome.execution_id
            why = self.leases.lost(eid)
            if why is None:
                send.append(item)
                continue
            self._lease_lost(eid, item.message_id, why)
            self.leases.release(eid)
        return send

    def acks_not_sent(self, send: list[PendingAck], exc: Exception) -> bool:
        """Acks whose report failed in transit go back to wait (up to `ACK_TRIES`);
        True when some will be tried again."""
        again: list[PendingAck] = []
        for item in send:
            item.tries += 1
            if item.tries < ACK_TRIES:
                again.append(item)
                continue
            log.warning(
                "gave up recording the ack of message %s (execution %s): %s; "
                "it will be delivered again",
                item.message_id,
                item.outcome.execution_id,
                exc,
            )
            self.leases.release(item.outcome.execution_id)
        if again:
            log.warning("recording %d acks failed (%s); trying again", len(again), exc)
        self.acks.put_back(again, self.monotonic() + pause_after(exc, 1))
        return bool(again)

    def acks_refused(self, send: list[PendingAck], exc: Exception) -> None:
        """A report refused as a whole: the messages will be delivered again."""
        log.warning(
            "the acks of %d messages were not recorded (%s): they will be delivered again",
            len(send),
            exc,
        )
        for item in send:
            self.leases.release(item.outcome.execution_id)

    def acks_answered(self, send: list[PendingAck], answers: list[Any]) -> None:
        """Count each ack the server recorded; a refused one is a lost lease."""
        for i, item in enumerate(send):
            eid = item.outcome.execution_id
            answer = answers[i] if i < len(answers) else None
            if answer is None or isinstance(answer, CueAPIError):
                if (
                    item.tries
                    and isinstance(answer, Conflict)
                    and answer.code == "outcome_already_recorded"
                ):
                    # An earlier report whose answer was lost in transit recorded it.
                    self.stats.count("acked")
                elif isinstance(answer, (Forbidden, Conflict, NotFound)):
                    self._lease_lost(eid, item.message_id, answer)
                else:
                    log.warning(
                        "the ack of message %s (execution %s) was not recorded: %s",
                        item.message_id,
                        eid,
                        answer or "no answer for it",
                    )
            else:
                self.stats.count("acked")
            self.leases.release(eid)


def _check_unsettled(msg: Delivery[Any]) -> None:
    if msg.settled is not None:
        raise AlreadySettled(msg.id, msg.settled.value)
