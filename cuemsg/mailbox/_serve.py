"""Serve flows: running a handler per message, the `serve` loop, and the heartbeat tick."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cuemsg._exceptions import (
    Conflict,
    CuemsgError,
    EnvelopeError,
    Forbidden,
    LeaseLost,
    NotFound,
    RetryLater,
)
from cuemsg.cueapi.models import Claimed
from cuemsg.envelope import from_timestamp
from cuemsg.mailbox._config import (
    ACK_BATCH,
    PREFETCH,
    PRESENCE_KEY,
    SERVE_ACK_DELAY,
    SERVE_BATCH,
)
from cuemsg.mailbox._helpers import error_name
from cuemsg.mailbox._ops import (
    AnnounceWorker,
    CallHandler,
    Drain,
    Extensions,
    Flow,
    RenewLease,
    UpdateCue,
    WaitSlots,
)
from cuemsg.mailbox._thread_state import BUSY_POLICIES, BusyPolicy
from cuemsg.mailbox._threads import ThreadFlows

log = logging.getLogger("cuemsg.mailbox")


class ServeFlows(ThreadFlows):
    """Serving: handlers in slots, batched acks, lease renewal and presence."""

    def handle(
        self, claimed: Claimed, handler: Callable[[Any], Any], type: Any = None
    ) -> Flow[None]:
        """Run `handler` on one claimed execution and settle it by what happened.

        Returned value: a request is replied with it; a message is acked.
        `RetryLater`: retry-later. Another exception: a request gets an error
        reply (its requester raises `RemoteError`); a message is rejected,
        or retried (bounded) with `on_error="retry"`.

        An ack is queued, not sent: with `claim.settle` the serve loop's next
        claim carries it; otherwise, or when the loop is parked in a claim
        already, the last handler to end while none other runs records the
        waiting acks with one `report_outcomes`, as does a handler that finds
        `ACK_BATCH` waiting; otherwise the heartbeat loop sends them
        `SERVE_ACK_DELAY` s after the first was decided.
        Replies, rejections and retries are recorded at once.
        """
        with self._handling_lock:
            self._handling += 1
        try:
            waiting = yield from self._handle(claimed, handler, type)
        finally:
            with self._handling_lock:
                self._handling -= 1
                idle = self._handling == 0
        # The serve loop's next claim carries them, if it is not parked in one.
        carried = self.carry_acks and not self.serve_claiming
        if self.acks and ((idle and not carried) or waiting >= ACK_BATCH):
            yield from self.flush_acks()

    def _handle(
        self, claimed: Claimed, handler: Callable[[Any], Any], type: Any = None
    ) -> Flow[int]:
        """`handle()` but the batching; answers the acks waiting after queueing its own (or 0)."""
        eid = claimed.execution_id
        waiting = 0
        try:
            msg = yield from self.admit(claimed, type)
            if msg is None:
                return 0
            if msg.thread is not None:
                self.threads.started(msg)
            try:
                result = yield CallHandler(handler, msg)
            except RetryLater as later:
                if msg.settled is None:
                    yield from self.retry_later(msg, later.delay, later.reason)
                return 0
            except Exception as exc:
                self.stats.count("handler_errors")
                name = error_name(exc)
                log.warning("handler failed on message %s: %s: %s", msg.id, name, exc)
                if msg.settled is not None:
                    return 0
                if msg.is_request and msg.reply_cue_id:
                    yield from self.reply_error(msg, name, str(exc))
                elif self.config.on_error == "retry":
                    yield from self.retry_later(
                        msg, self.backoff(msg.attempt), f"handler raised {name}: {exc}"
                    )
                else:
                    yield from self.reject(msg, f"handler raised {name}: {exc}")
                return 0
            if msg.settled is not None:
                return 0
            if msg.is_request and msg.reply_cue_id:
                try:
                    yield from self.reply(msg, result)
                except EnvelopeError as exc:
                    yield from self.reply_error(msg, "EnvelopeError", str(exc))
            else:
                waiting = self.queue_ack(msg, SERVE_ACK_DELAY)  # the lease stays held
        except LeaseLost:
            pass  # logged and counted where it was raised
        except CuemsgError as exc:
            log.warning("could not settle execution %s: %s", eid, exc)
        finally:
            if not waiting:
                self.leases.release(eid)
        return waiting

    def serve(
        self,
        handler: Callable[[Any], Any],
        *,
        concurrency: int,
        type: Any = None,
        idle_timeout: float | None = None,
        on_busy: BusyPolicy = "queue",
        prefetch: int = PREFETCH,
    ) -> Flow[None]:
        """Claim and handle messages, `concurrency` at a time, until stop() (or idle).

        A claim takes up to `prefetch` messages, and never more than there are
        free handler slots: each claimed message goes to a handler at once, so
        none waits in hand (nothing to give back at stop()). Messages of one
        thread are handled one at a time (`dispatch`); a message that waits for
        its thread holds a slot, so at most `concurrency` are claimed and not
        yet settled. With `claim.settle` the acks ride on the next claim.
        """
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, not {prefetch}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        if on_busy not in BUSY_POLICIES:
            raise ValueError(
                f"on_busy must be one of {', '.join(map(repr, BUSY_POLICIES))}, not {on_busy!r}"
            )
        carry = "claim.settle" in (yield Extensions())
        self.presence.start()
        # The first beat goes before the first claim, not from the heartbeat
        # timer mid-conversation: the server lists this worker before it takes
        # anything, and no request of its own lands between a caller's first
        # request and its answer.
        yield from self._beat(self.monotonic())
        last = self.monotonic()
        error: Exception | None = None
        self.carry_acks = carry
        try:
            while not self.stopping:
                free = yield WaitSlots(concurrency)
                if self.stopping:
                    break
                deadline = None if idle_timeout is None else last + idle_timeout
                self.serve_claiming = True
                try:
                    claims = yield from self.claim(
                        self.info.task,
                        self._poll(deadline),
                        min(free, prefetch, SERVE_BATCH),
                        settle=carry,
                    )
                finally:
                    self.serve_claiming = False
                if not claims:
                    if deadline is not None and self.monotonic() >= deadline:
                        break
                    continue
                last = self.monotonic()
                for claimed in claims:
                    yield from self.dispatch(
                        claimed, lambda c: self.handle(c, handler, type), on_busy
                    )
        except GeneratorExit:
            self.presence.stop()
            self.carry_acks = False
            raise
        except Exception as exc:
            error = exc  # finish the handlers in hand first
        yield Drain()
        self.presence.stop()
        self.carry_acks = False
        if self.acks:
            yield from self.flush_acks(final=True)
        if error is not None:
            raise error

    # -- heartbeats ------------------------------------------------------------------------

    def tick(self) -> Flow[None]:
        """Send the acks, renew the leases and tell the server this worker is alive, when due."""
        now = self.monotonic()
        if self.acks.due(now):
            yield from self.flush_acks()
        for eid in self.leases.due(now):
            try:
                yield RenewLease(eid, self.info.worker_id)
            except (Forbidden, Conflict, NotFound) as exc:
                self._lease_lost(eid, None, exc)
            except CuemsgError as exc:
                log.debug("heartbeat of %s failed (%s); next time", eid, exc)
        yield from self._beat(now)

    def _beat(self, now: float) -> Flow[None]:
        """Tell the server this worker is alive, when a presence beat is due."""
        if self.presence.due(now):
            try:
                yield AnnounceWorker(self.info.worker_id, [self.info.task])
                extensions = yield Extensions()
                if "workers.list" not in extensions:
                    yield from self._stamp_presence()
            except CuemsgError as exc:
                log.debug("presence heartbeat failed: %s", exc)

    def _stamp_presence(self) -> Flow[None]:
        payload = dict(self.info.cue_payload)
        payload[PRESENCE_KEY] = {
            "worker_id": self.info.worker_id,
            "at": from_timestamp(self.clock()).isoformat(),
        }
        yield UpdateCue(self.info.address, {"payload": payload})

    def next_tick_in(self, cap: float) -> float:
        """Seconds until `tick()` has something to do (at most `cap`)."""
        now = self.monotonic()
        times = [
            t
            for t in (self.leases.next_due(), self.presence.next_due(), self.acks.next_due())
            if t is not None
        ]
        if not times:
            return cap
        return max(0.0, min(min(times) - now, cap))
