"""Receive flows: claiming, admitting a claimed execution, and the `receive` loop."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

from cuemsg._exceptions import CuemsgError, EnvelopeError, LeaseLost
from cuemsg.cueapi.models import Claimed, ClaimResult, Released
from cuemsg.envelope import decode_body, decode_payload, from_timestamp, payload_from_bytes
from cuemsg.mailbox._config import ACK_CARRY, PREFETCH, RECEIVE_ACK_DELAY
from cuemsg.mailbox._helpers import TRANSIENT, pause_after
from cuemsg.mailbox._ops import Claim, Deliver, Extensions, Fire, Flow, Pause, Release
from cuemsg.mailbox._records import Delivery, cached_reply_decoder
from cuemsg.mailbox._settle import SettleFlows
from cuemsg.mailbox._withdrawn import is_cancelled

log = logging.getLogger("cuemsg.mailbox")


class ReceiveFlows(SettleFlows):
    """Receiving: what to claim, deliver, or settle without the handler."""

    # -- claiming --------------------------------------------------------------------------

    def claim(
        self,
        task: str,
        wait: float | None,
        limit: int | None,
        *,
        hold: bool = True,
        settle: bool = False,
    ) -> Flow[list[Claimed]]:
        """Claim up to `limit` executions of `task`, waiting up to `wait` s.

        With `settle` (the server lists `claim.settle`) the waiting acks ride
        on the claim and are recorded before it; if the claim fails they wait
        for the next try, as a failed `flush_acks` leaves them.

        A transient failure (network, 5xx, 429) is logged and answered by a
        pause and an empty list, so loops keep going; other errors raise.
        """
        send = self.take_acks() if settle else []
        if len(send) > ACK_CARRY:
            # Acks beyond what one claim may carry wait, first in line, for the next one.
            self.acks.put_back(send[ACK_CARRY:], self.monotonic())
            send = send[:ACK_CARRY]
        outcomes = tuple([item.outcome for item in send])
        # Recorded as the claim starts, answered when it ends (maybe a long poll later):
        # renewing them meanwhile would be refused (409) and read as a lost lease.
        carried = [o.execution_id for o in outcomes]
        self.leases.pause(carried)
        try:
            result: ClaimResult = yield Claim(self.info.worker_id, task, wait, limit, outcomes)
        except TRANSIENT as exc:
            if send:
                self.leases.resume(carried, self.monotonic())
                self.acks_not_sent(send, exc)
            log.warning("claiming task %r failed (%s); trying again", task, exc)
            yield Pause(pause_after(exc, 1))
            return []
        except CuemsgError as exc:
            if send:
                self.acks_refused(send, exc)
            raise
        if send:
            self.acks_answered(send, result.settled)
        if hold:
            now = self.monotonic()
            for claimed in result.executions:
                self.leases.hold(claimed.execution_id, claimed.lease_seconds, now)
        return list(result.executions)

    def admit(self, claimed: Claimed, type: Any = None) -> Flow[Delivery[Any] | None]:
        """Read a claimed execution; the message to handle, or None if settled here.

        Settled here without the handler, each with an outcome saying why:
        an unreadable envelope or a newer format (rejected), an unsigned or
        forged message when `require_signed` is on (rejected), a message past
        its deadline (expired), a redelivered gather request its gather has
        cancelled (`_withdrawn`), a redelivered id already handled (acked as
        a duplicate; a request's recorded reply is sent again).
        """
        eid = claimed.execution_id
        try:
            env = decode_payload(claimed.payload)
        except EnvelopeError as exc:
            self.stats.count("bad")
            log.warning("rejected execution %s: %s", eid, exc)
            yield from self._quiet(
                self._settle_eid(
                    eid,
                    f"exec:{eid}",
                    success=False,
                    error=f"rejected: not a readable cuemsg envelope: {exc}",
                    metadata=self._meta_state("rejected", reason="bad_envelope"),
                )
            )
            return None
        meta = env.meta
        message_id = meta.id if meta is not None else f"exec:{eid}"
        unsigned = None
        try:
            if self.config.require_signed:  # else no flow to make: nothing to check
                unsigned = yield from self.unsigned_reason(claimed.payload or {}, env)
        except TRANSIENT as exc:  # the sender's key could not be read: it comes back later
            log.warning("cannot check who sent %s (%s); it will be delivered again", eid, exc)
            self.leases.release(eid)
            return None
        if unsigned is not None:
            self.stats.count("unsigned")
            log.warning("rejected message %s (execution %s): %s", message_id, eid, unsigned)
            yield from self._quiet(
                self._settle_eid(
                    eid,
                    message_id,
                    success=False,
                    error=f"rejected: {unsigned}; not handled",
                    metadata=self._meta_state(
                        "rejected", id=message_id, reason=unsigned.partition(":")[0]
                    ),
                )
            )
            return None
        expires = env.expires_at
        now = self.clock()
        if expires is not None and now > expires:
            self.stats.count("expired")
            log.info(
                "skipped expired message %s (%.1fs past its deadline)", message_id, now - expires
            )
            yield from self._quiet(
                self._settle_eid(
                    eid,
                    message_id,
                    success=False,
                    error=(
                        f"expired: the deadline {from_timestamp(expires).isoformat()} passed "
                        f"{now - expires:.1f}s before delivery; not handled"
                    ),
                    metadata=self._meta_state("expired", id=message_id),
                )
            )
            return None
        if (claimed.attempts or 1) > 1 and meta is not None and meta.gather and meta.reply_task:
            # Claimed again after a responder lost it: its gather may have cancelled it since.
            cid = meta.correlation_id or message_id
            if (yield from is_cancelled(meta.reply_task, meta.gather, cid)):
                log.info("skipped request %s: its gather %s cancelled it", message_id, meta.gather)
                yield from self._quiet(
                    self._settle_eid(
                        eid,
                        message_id,
                        success=False,
                        error=(
                            f"cancelled: gather {meta.gather} had the replies it needed; "
                            "skipped, not handled"
                        ),
                        metadata=self._meta_state("cancelled", id=message_id, gather=meta.gather),
                    )
                )
                return None
        seen = self.dedupe.seen(self._dedupe_key(message_id))
        if seen is not None:
            self.stats.count("duplicates")
            log.info("message %s was handled before; acked without the handler", message_id)
            note = ""
            reply_execution = None
            if seen.reply is not None:
                reply_execution = yield from self._quiet(self._resend(seen.reply))
                if reply_execution:
                    note = f"; its reply was sent again (execution {reply_execution})"
            yield from self._quiet(
                self._settle_eid(
                    eid,
                    message_id,
                    success=True,
                    result=f"duplicate: message {message_id} was already handled{note}",
                    metadata=self._meta_state(
                        "duplicate", id=message_id, reply_execution_id=reply_execution
                    ),
                )
            )
            return None
        try:
            body = decode_body(env.message, type)
        except EnvelopeError as exc:
            self.stats.count("bad")
            log.warning("message %s does not fit %r: %s", message_id, type, exc)
            delivery = self.make_message(
                body=env.message,
                envelope=env,
                claimed=claimed,
                mailbox_address=self.info.address,
            )
            if delivery.is_request:
                yield from self._quiet(self.reply_error(delivery, "EnvelopeError", str(exc)))
            else:
                yield from self._quiet(self.reject(delivery, f"rejected: {exc}"))
            return None
        self.stats.count("received")
        delivery = self.make_message(
            body=body, envelope=env, claimed=claimed, mailbox_address=self.info.address
        )
        return delivery

    def _resend(self, record: bytes) -> Flow[str | None]:
        cached = cached_reply_decoder.decode(record)
        if bytes(cached.payload) == b"null":
            return cached.execution_id  # too big to keep; the first send stands
        payload = payload_from_bytes(bytes(cached.payload))
        fired = yield Fire(cached.cue_id, payload, idempotency_key=cached.key)
        return str(fired.id)

    def receive(
        self,
        *,
        wait: float | None,
        limit: int | None,
        type: Any = None,
        prefetch: int | None = None,
    ) -> Flow[None]:
        """Deliver messages one by one until `limit` were, `wait` s pass with none, or stop().

        A message the caller leaves unsettled is acked when it asks for the next.
        Only `serve()` announces the worker as a responder: an idle receive loop
        costs one claim per `poll_wait` and nothing more.

        Each claim takes up to `prefetch` messages (never more than `limit`
        still wants): all those waiting, up to that many, or the first one to
        come. Their leases are renewed while they wait their turn; each is
        admitted (dedupe, expiry) when its turn comes. The acks of the
        messages left unsettled are queued (their ids go to the dedupe store
        at once) and ride on the next claim (`claim.settle`), or are recorded
        together before it, when the loop ends, or `RECEIVE_ACK_DELAY` s
        after they were decided if the caller is slower than that. With
        `prefetch=1` and no `claim.settle` each ack is its own request, at
        once. stop() ends the loop before the next message: those claimed
        and not handed out are given back (`release_prefetched`), as they are
        when the caller leaves the loop (the driver runs it). Explicit
        `ack()`, `reject()`, `retry_later()` and `reply()` are recorded at once.
        A driver runs `flush_acks(final=True)` when the loop is closed early.
        """
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, not {prefetch}")
        if wait is not None and not wait >= 0:  # as collect(wait=): not silently "no wait"
            raise ValueError(f"wait must be >= 0, not {wait}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        count = 0
        deadline = None if wait is None else self.monotonic() + wait
        extensions = yield Extensions()
        # With `claim.settle` the acks of the messages moved on from ride on the next claim.
        carry = "claim.settle" in extensions
        if prefetch is None:
            prefetch = default_prefetch(extensions)
        while not self.stopping and (limit is None or count < limit):
            if prefetch > 1 and self.acks and not carry:
                yield from self.flush_acks()
            want = prefetch if limit is None else min(prefetch, limit - count)
            claims = yield from self.claim(
                self.info.task, self._poll(deadline), want if want > 1 else None, settle=carry
            )
            if not claims:
                if deadline is not None and self.monotonic() >= deadline:
                    return
                continue
            # Claimed and not handed out yet: this loop's own (another loop may run).
            ahead = [c.execution_id for c in claims]
            try:
                for claimed in claims:
                    if self.stopping:
                        break  # the rest are given back below
                    ahead.remove(claimed.execution_id)
                    msg = yield from self.admit(claimed, type)
                    if msg is None:
                        continue
                    count += 1
                    deadline = None if wait is None else self.monotonic() + wait
                    try:
                        yield Deliver(msg)
                    except GeneratorExit:
                        # The caller left the loop holding it: stop renewing; its lease runs
                        # out and it is delivered again (ack before breaking out to avoid it).
                        self.leases.release(claimed.execution_id)
                        raise
                    if msg.settled is None:
                        # A request's ack tells its requester: at once.
                        if (prefetch == 1 and not carry) or msg.is_request:
                            yield from self._quiet(self.ack(msg))
                            continue
                        try:  # noqa: SIM105 - suppress() would make an object per message
                            self.queue_ack(msg, RECEIVE_ACK_DELAY)
                        except LeaseLost:
                            pass  # logged and counted where raised
            except GeneratorExit:
                # No op can be yielded now: the driver gives them back (`release_prefetched`).
                self.prefetched.update(dict.fromkeys(ahead))
                raise
            if ahead:
                yield from self.release_prefetched(ahead)
        if self.acks:
            yield from self.flush_acks(final=True)

    def release_prefetched(self, execution_ids: Sequence[str] | None = None) -> Flow[int]:
        """Give back messages claimed ahead and not handed out; how many went back.

        `execution_ids`, or (None) those a receive loop closed early left in
        `prefetched`. With `executions.release` they are pending again at once,
        their attempt not counted; otherwise (or if that fails) their leases
        are no longer renewed and run out, and they are delivered again then.
        """
        if execution_ids is None:
            ids = tuple(self.prefetched)
            self.prefetched.clear()
        else:
            ids = tuple(execution_ids)
        if not ids:
            return 0
        released = 0
        try:
            if "executions.release" in (yield Extensions()):
                results = yield Release(self.info.worker_id, ids)
                released = sum(1 for r in results if isinstance(r, Released))
                for r in results:
                    if not isinstance(r, Released):
                        log.info("could not give back a prefetched message: %s", r)
        except CuemsgError as exc:
            log.warning("could not give back %d prefetched messages (%s)", len(ids), exc)
        finally:
            for eid in ids:
                self.leases.release(eid)
        if released < len(ids):
            log.info(
                "%d prefetched messages go back when their leases run out", len(ids) - released
            )
        return released


def pick_prefetch(prefetch: int | None, batch: int | None) -> int | None:
    """`receive(prefetch=)`, or its former name `batch=`; not both."""
    if batch is None:
        return prefetch
    if prefetch is not None and prefetch != batch:
        raise ValueError("give prefetch= or batch= (its former name), not both")
    return batch


def default_prefetch(extensions: Collection[str]) -> int:
    """`PREFETCH` where a claim takes many and leftovers can be given back, else 1.

    On the plain contract a prefetched message not handed out would wait for its
    lease to run out, and claiming many costs a request each anyway.
    """
    if "claim.many" in extensions and "executions.release" in extensions:
        return PREFETCH
    return 1
