"""Request/reply routing (`ReplyRouter`), reading replies (`unwrap`) and timeout reasons."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cuemsg._exceptions import MailboxError, RemoteError
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import Envelope, decode_body
from cuemsg.mailbox._config import TimeoutReason
from cuemsg.mailbox._helpers import parse_time
from cuemsg.mailbox._noreply import from_notice

# -- request/reply routing ------------------------------------------------------------------


class Event(Protocol):
    """What a waiting request is woken with (`threading.Event`, `anyio.Event`)."""

    def set(self) -> None: ...


@dataclass
class PendingReply:
    """One outstanding request, waiting for the reply with its correlation id."""

    correlation_id: str
    event: Event
    reply: Envelope | None = None
    reply_execution_id: str | None = None
    closed: bool = False


class ReplyRouter:
    """All of a mailbox's outstanding requests: one reply stream, routed by correlation id.

    A reply whose request is waiting wakes it; one whose request has given
    up (or never existed here) is late; one for a request already answered
    is a duplicate (a redelivered reply).
    """

    RECENT = 10_000  # answered correlation ids remembered to tell duplicates from late replies

    def __init__(self, event_factory: Callable[[], Event]) -> None:
        self._event_factory = event_factory
        self._waiting: dict[str, PendingReply] = {}
        # Entries still without a reply: the reply loop polls only while some are (an
        # answered entry stays in `_waiting` until its request wakes and gives it up).
        self._unanswered = 0
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.closed = False
        self.on_expect: Callable[[], None] | None = None  # wakes an idle reply loop

    def __len__(self) -> int:
        """Requests still waiting for their reply."""
        return self._unanswered

    def expect(self, correlation_id: str) -> PendingReply:
        """Register a request before it is fired, so a fast reply finds it."""
        pending = PendingReply(correlation_id, self._event_factory())
        with self._lock:
            if self.closed:
                raise MailboxError("the mailbox is closed")
            self._drop(self._waiting.get(correlation_id))
            self._waiting[correlation_id] = pending
            self._unanswered += 1
        if self.on_expect is not None:
            self.on_expect()
        return pending

    def share_event(self, pendings: list[PendingReply]) -> Event:
        """One new event that wakes when a reply comes for any of `pendings` (`gather`).

        Swapped in under the lock: a reply routed before the swap is already
        in its entry's `reply`; one routed after sets the new event.
        """
        event = self._event_factory()
        with self._lock:
            for pending in pendings:
                pending.event = event
        return event

    def deliver(
        self, correlation_id: str, reply: Envelope, execution_id: str
    ) -> Literal["delivered", "late", "duplicate"]:
        """Hand a reply to its waiting request."""
        with self._lock:
            pending = self._waiting.get(correlation_id)
            if pending is None or pending.closed or pending.reply is not None:
                return "duplicate" if correlation_id in self._answered else "late"
            pending.reply = reply
            pending.reply_execution_id = execution_id
            self._unanswered -= 1
            self._answered[correlation_id] = None
            while len(self._answered) > self.RECENT:
                self._answered.popitem(last=False)
        pending.event.set()
        return "delivered"

    def give_up(self, correlation_id: str) -> PendingReply | None:
        """Stop waiting for `correlation_id`; the entry (with any reply that raced in)."""
        with self._lock:
            pending = self._waiting.pop(correlation_id, None)
            self._drop(pending)
            return pending

    def _drop(self, pending: PendingReply | None) -> None:
        """Close an entry leaving `_waiting` (under the lock)."""
        if pending is not None and not pending.closed:
            pending.closed = True
            if pending.reply is None:
                self._unanswered -= 1

    def close(self) -> None:
        """Wake every waiting request (they fail: the mailbox is closing)."""
        with self._lock:
            self.closed = True
            waiting = list(self._waiting.values())
        for pending in waiting:
            pending.event.set()


def unwrap(reply: Envelope, type: Any = None) -> Any:
    """A reply's body, decoded to `type`; an error reply raises `RemoteError`.

    A no-reply notice (the request was acked or rejected unanswered) raises `NoReply`.
    """
    meta = reply.meta
    if meta is not None and meta.kind == "error":
        no_reply = from_notice(reply.message, meta.correlation_id)
        if no_reply is not None:
            raise no_reply
        err = reply.message if isinstance(reply.message, dict) else {}
        raise RemoteError(
            str(err.get("type", "Error")),
            str(err.get("message", "")),
            correlation_id=meta.correlation_id,
        )
    return decode_body(reply.message, type)


def reply_body(env: Envelope) -> Any:
    return env.message


def explain_timeout(exe: Execution, now: float) -> tuple[TimeoutReason, str]:
    """Tell the three failures of a request apart from its execution's record.

    - no responder: nobody ever claimed it;
    - dead responder: claimed, then its lease ran out with no outcome (back
      in the queue, failed by the claim cap, or a lease already expired);
    - slow responder: a responder holds it under a live lease, or finished
      it after the requester's deadline (its reply came too late).
    """
    status = exe.status
    raw = exe.raw
    lease_until = parse_time(raw.get("lease_expires_at"))
    where = f"execution {exe.id} is {status}"
    if status in ("pending", "retry_ready"):
        if exe.attempts == 0:
            return "no_responder", f"{where}: no receiver claimed it (is a responder running?)"
        return (
            "dead_responder",
            f"{where} again after {exe.attempts} claim(s): its receiver lost the lease "
            "without an outcome (crashed or hung)",
        )
    if status == "delivering":
        who = exe.claimed_by_worker or "a worker"
        if lease_until is not None and lease_until < now:
            return "dead_responder", f"{where}: {who} claimed it and its lease ran out"
        return "slow_responder", f"{where}: {who} is still handling it"
    if status == "failed" and exe.outcome is None:
        return (
            "dead_responder",
            f"{where} with no outcome: its receivers lost the lease {exe.attempts} time(s)",
        )
    if status == "missed":
        return "no_responder", f"{where}: nobody claimed it in time"
    outcome = exe.outcome or {}
    said = outcome.get("result") or outcome.get("error") or ""
    return "slow_responder", f"{where} ({said[:200]}): the answer came after the deadline"
