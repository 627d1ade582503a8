"""The mailbox's decisions, with no I/O: one code path for `Mailbox` and `AsyncMailbox`.

Every operation is a generator *flow* that yields `Op`s (fire, claim,
outcome, call the handler, wait for a reply...) and is sent their results
(or thrown their errors). The sync and async mailboxes only run the ops:
most ops carry a `call(client)` that returns the client's answer (sync) or
an awaitable (async), so the drivers hold no per-operation code. The ops a
driver must run itself are those that wait (`Sleep`, `AwaitReply`), run
user code (`CallHandler`), hand a message to the caller of `receive`
(`Deliver`) or schedule work (`WaitSlots`, `Spawn`, `Drain`, `StartReplies`).

What is decided here:
- opening: create the mailbox cue or find it by name (safe when two
  processes race), its schedule, pausing it;
- sending: the envelope, the message id as idempotency key, scheduling;
- receiving: what to claim, what to deliver and what to settle without
  the handler (bad envelopes, expired messages, duplicates);
- settling: the outcome bodies of ack, reject, retry-later and replies,
  and what a lost lease means;
- request/reply: correlation of replies to waiting requests, late and
  duplicate replies, and why a request timed out;
- batched acks: which acks wait to be recorded together (`report_outcomes`),
  for how long, and what a refused item of a batch means;
- heartbeats: when each held lease is renewed, worker presence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

import msgspec

from cuemsg._exceptions import (
    Conflict,
    CueAPIError,
    CuemsgError,
    EnvelopeError,
    ExtensionNotAvailable,
    Forbidden,
    LeaseLost,
    MailboxError,
    NoResponder,
    NotFound,
    RateLimited,
    RemoteError,
    RequestTimeout,
    RetryLater,
    ServerError,
    TransportError,
)
from cuemsg.cueapi.models import Claimed, ClaimResult, Cue, Execution, FireRequest, OutcomeRequest
from cuemsg.envelope import (
    Envelope,
    ErrorBody,
    Kind,
    Meta,
    build_payload,
    decode_body,
    decode_payload,
    from_timestamp,
    new_id,
    payload_bytes,
    payload_from_bytes,
    utcnow,
)
from cuemsg.mailbox.dedupe import DedupeStore, MemoryDedupe
from cuemsg.mailbox.tracing import with_trace

log = logging.getLogger("cuemsg.mailbox")

T = TypeVar("T")
Flow = Generator["Op", Any, T]

# -- defaults -------------------------------------------------------------------------------

#: Longest single claim long-poll of a receive/serve/reply loop (seconds). A
#: graceful `stop()` takes effect when the current poll returns, so this bounds it.
DEFAULT_POLL_WAIT = 5.0
#: Retry-later re-fires of one message before it is rejected for good.
DEFAULT_MAX_ATTEMPTS = 5
#: Claims of one execution (the cue's `retry.max_attempts`): a message whose
#: receivers keep dying is failed by the server after this many lease expiries.
DEFAULT_MAX_DELIVERIES = 5
#: `request()` deadline when none is given (seconds).
DEFAULT_REQUEST_TIMEOUT = 30.0
#: How often a receiving mailbox tells the server it is alive (`POST /v1/worker/heartbeat`).
DEFAULT_PRESENCE_INTERVAL = 15.0
#: A worker that heartbeated within this many seconds counts as alive (`require_responder`).
DEFAULT_PRESENCE_TTL = 60.0
#: First delay of a retry-later made by `on_error="retry"`; doubles per attempt.
DEFAULT_RETRY_DELAY = 1.0
#: Lease assumed when a claim answer does not state one (the hosted default).
FALLBACK_LEASE_SECONDS = 900.0
#: Replies claimed per request of the reply loop.
REPLY_BATCH = 50
#: Messages claimed at most per request of `serve` (bounded by free handler slots).
SERVE_BATCH = 50
#: Longest wait of an ack made by `serve()` before it is recorded (seconds): acks of
#: handlers that finish within this of each other go in one `report_outcomes`.
SERVE_ACK_DELAY = 0.05
#: Longest wait of an ack made by `receive(batch=n)` when the caller is slow to get
#: through the batch (seconds); otherwise the batch's acks go before the next claim.
RECEIVE_ACK_DELAY = 1.0
#: Acks recorded at once, at most, before `serve()` flushes without waiting.
ACK_BATCH = 50
#: Reports of a batch of acks that fail in transit before those acks are given up
#: (their messages are then delivered again; a dedupe store acks them as duplicates).
ACK_TRIES = 3
#: Replies bigger than this are not kept for re-sending on a duplicate request.
MAX_CACHED_REPLY = 64 * 1024
#: Pause after a transient error of a loop (doubled up to 5 s).
ERROR_PAUSE = 0.2
#: `result` and `error` of an outcome are cut to this many characters (CUEAPI.md).
OUTCOME_TEXT_LIMIT = 2000

#: The mailbox cue's schedule: `recurring` (a `once` cue completes after its
#: first outcome and would stop taking fires), on a cron that fires once a year,
#: and the cue is paused at once, so it never fires on its own; manual fires
#: work whatever the cue's status (CUEAPI.md, Fire).
MAILBOX_SCHEDULE: dict[str, Any] = {"type": "recurring", "cron": "0 0 1 1 *", "timezone": "UTC"}
#: Replies to a mailbox's requests come on the same cue with this task suffix.
REPLY_SUFFIX = ".replies"
#: The key of the mailbox cue's payload where serving workers stamp their presence
#: on servers without the `workers.list` extension.
PRESENCE_KEY = "cuemsg_presence"

OnError = Literal["reject", "retry"]
TimeoutReason = Literal["no_responder", "dead_responder", "slow_responder", "unknown"]


# -- ops ----------------------------------------------------------------------------------


class Op:
    """One step a flow asks its driver to perform."""

    def call(self, client: Any) -> Any:
        """Run against a `CueClient` (the answer) or `AsyncCueClient` (an awaitable)."""
        # Ops like Sleep or Spawn are the driver's own business, not the client's.
        raise TypeError(f"{type(self).__name__} is run by the driver itself, not by a client")


@dataclass(frozen=True)
class CreateCue(Op):
    name: str
    payload: dict[str, Any]
    schedule: dict[str, Any]
    retry: dict[str, Any]
    description: str

    def call(self, client: Any) -> Any:
        return client.cues.create(
            self.name,
            transport="worker",
            payload=self.payload,
            schedule=self.schedule,
            retry=self.retry,
            description=self.description,
        )


@dataclass(frozen=True)
class ListCues(Op):
    offset: int
    limit: int

    def call(self, client: Any) -> Any:
        return client.cues.list(limit=self.limit, offset=self.offset)


@dataclass(frozen=True)
class GetCue(Op):
    cue_id: str

    def call(self, client: Any) -> Any:
        return client.cues.get(self.cue_id)


@dataclass(frozen=True)
class UpdateCue(Op):
    cue_id: str
    changes: dict[str, Any]

    def call(self, client: Any) -> Any:
        return client.cues.update(self.cue_id, **self.changes)


@dataclass(frozen=True)
class Fire(Op):
    cue_id: str
    payload: dict[str, Any]
    idempotency_key: str
    send_at: datetime | None = None

    def call(self, client: Any) -> Any:
        return client.cues.fire(
            self.cue_id, self.payload, send_at=self.send_at, idempotency_key=self.idempotency_key
        )


@dataclass(frozen=True)
class FireMany(Op):
    fires: list[FireRequest]

    def call(self, client: Any) -> Any:
        return client.cues.fire_many(self.fires)


@dataclass(frozen=True)
class Claim(Op):
    worker_id: str
    task: str
    wait: float | None
    limit: int | None

    def call(self, client: Any) -> Any:
        return client.executions.claim_next(
            worker_id=self.worker_id, task=self.task, wait=self.wait, limit=self.limit
        )


@dataclass(frozen=True)
class Heartbeat(Op):
    execution_id: str
    worker_id: str

    def call(self, client: Any) -> Any:
        return client.executions.heartbeat(self.execution_id, worker_id=self.worker_id)


@dataclass(frozen=True)
class Outcome(Op):
    execution_id: str
    worker_id: str
    success: bool
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None

    def call(self, client: Any) -> Any:
        return client.executions.report_outcome(
            self.execution_id,
            worker_id=self.worker_id,
            success=self.success,
            result=self.result,
            error=self.error,
            metadata=self.metadata,
        )


@dataclass(frozen=True)
class Outcomes(Op):
    outcomes: list[OutcomeRequest]
    worker_id: str

    def call(self, client: Any) -> Any:
        return client.executions.report_outcomes(self.outcomes, worker_id=self.worker_id)


@dataclass(frozen=True)
class GetExecution(Op):
    execution_id: str

    def call(self, client: Any) -> Any:
        return client.executions.get(self.execution_id)


@dataclass(frozen=True)
class ListWorkers(Op):
    def call(self, client: Any) -> Any:
        return client.workers.list()


@dataclass(frozen=True)
class WorkerHeartbeat(Op):
    worker_id: str
    handlers: list[str]

    def call(self, client: Any) -> Any:
        return client.workers.heartbeat(self.worker_id, self.handlers)


@dataclass(frozen=True)
class Extensions(Op):
    def call(self, client: Any) -> Any:
        # AsyncCueClient probes with a coroutine; CueClient's property probes on access.
        load = getattr(client, "load_extensions", None)
        return load() if load is not None else client.extensions


# Ops the driver runs itself.


@dataclass(frozen=True)
class Sleep(Op):
    seconds: float


@dataclass(frozen=True)
class AwaitReply(Op):
    """Wait up to `timeout` s for `pending.event`; the answer is ignored (read `pending`)."""

    pending: PendingReply
    timeout: float


@dataclass(frozen=True)
class CallHandler(Op):
    """Call `handler(message)` (await it if it returns an awaitable); answer its result."""

    handler: Callable[[Any], Any]
    message: Any


@dataclass(frozen=True)
class Deliver(Op):
    """Hand `message` to the caller of `receive()`; resumed when it asks for the next one."""

    message: Any


@dataclass(frozen=True)
class StartReplies(Op):
    """Make sure the mailbox's reply loop runs."""


@dataclass(frozen=True)
class IdleWait(Op):
    """Sleep until a request starts waiting (`ReplyRouter.on_expect`) or `timeout` passes."""

    timeout: float


@dataclass(frozen=True)
class WaitSlots(Op):
    """Wait until at least one of `concurrency` handler slots is free; answer how many are."""

    concurrency: int


@dataclass(frozen=True)
class Spawn(Op):
    """Run `flow` concurrently in a handler slot."""

    flow: Flow[None]


@dataclass(frozen=True)
class Drain(Op):
    """Wait for every spawned flow to finish."""


def advance(flow: Flow[T], value: Any, exc: BaseException | None) -> tuple[bool, Any]:
    """Resume `flow` with a value or an error; (True, result) when it finished, else (False, op)."""
    try:
        op = flow.throw(exc) if exc is not None else flow.send(value)
    except StopIteration as stop:
        return True, stop.value
    return False, op


# -- records --------------------------------------------------------------------------------


class Sent(msgspec.Struct, frozen=True, kw_only=True):
    """What `send()` made: the message id and the execution that carries it.

    Attributes:
        id: the message id (also the fire's idempotency key).
        execution_id: the execution on the recipient's cue (its record in CueAPI).
        cue_id: the recipient's cue.
        scheduled_for: when it becomes claimable (ISO 8601), as the server said.
    """

    id: str
    execution_id: str
    cue_id: str
    scheduled_for: str | None = None


@dataclass(frozen=True)
class MailboxInfo:
    """Where a mailbox lives: its cue, tasks and worker name."""

    name: str
    address: str
    task: str
    reply_task: str
    worker_id: str
    cue_payload: dict[str, Any]


@dataclass
class MailboxConfig:
    """A mailbox's options (see `Mailbox.open` for each)."""

    poll_wait: float = DEFAULT_POLL_WAIT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    on_error: OnError = "reject"
    retry_delay: float = DEFAULT_RETRY_DELAY
    dedupe: DedupeStore | None = None
    on_late_reply: Callable[[Any], Any] | None = None
    presence_interval: float = DEFAULT_PRESENCE_INTERVAL
    presence_ttl: float = DEFAULT_PRESENCE_TTL

    def __post_init__(self) -> None:
        if self.poll_wait <= 0:
            raise ValueError(f"poll_wait must be > 0, not {self.poll_wait}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts}")
        if not 1 <= self.max_deliveries <= 10:
            raise ValueError(f"max_deliveries must be 1..10, not {self.max_deliveries}")
        if self.on_error not in ("reject", "retry"):
            raise ValueError(f"on_error must be 'reject' or 'retry', not {self.on_error!r}")
        if self.presence_interval <= 0:
            raise ValueError(f"presence_interval must be > 0, not {self.presence_interval}")


class MailboxStats:
    """Counters of what a mailbox did (thread-safe). Read them as attributes or `as_dict()`.

    Attributes:
        sent: messages fired (requests and replies included).
        received: messages handed to a handler or to `receive()`.
        acked, rejected, retried, replied: settled that way.
        expired: skipped because their deadline had passed (outcome: expired).
        duplicates: redelivered ids acked without calling the handler.
        bad: payloads that were not readable envelopes (rejected).
        redelivered: leases lost while holding a message (it goes to another receiver).
        handler_errors: handler exceptions.
        requests, timeouts, replies_received, late_replies: request/reply.
    """

    FIELDS = (
        "sent",
        "received",
        "acked",
        "rejected",
        "retried",
        "replied",
        "expired",
        "duplicates",
        "bad",
        "redelivered",
        "handler_errors",
        "requests",
        "timeouts",
        "replies_received",
        "late_replies",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        with self._lock:
            self._counts[name] += n

    def __getattr__(self, name: str) -> int:
        counts = self.__dict__.get("_counts")
        if counts is not None and name in counts:
            return int(counts[name])
        raise AttributeError(name)

    def as_dict(self) -> dict[str, int]:
        """A snapshot of every counter."""
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"MailboxStats({shown})"


class Delivery(Generic[T]):
    """A received message: its body and metadata (the data part of `Message`).

    Attributes:
        body: the body, decoded to the type the receiver named (else JSON builtins).
        id: the message id (for a foreign payload, `"exec:<execution id>"`).
        kind: `message`, `request`, `reply` or `error`.
        sender: the sender mailbox's address, when it said.
        thread: the conversation id, if any.
        headers: free string metadata.
        correlation_id: for a request, the id its reply will carry.
        sent_at: when the sender made it (None for a foreign payload).
        expires_at: its deadline, if any.
        attempt: 1, +1 per retry-later.
        deliveries: claims of this execution so far (1 on a first delivery).
        execution_id: the execution carrying it (its record in CueAPI).
        cue_id: the cue it came on.
        task: the task it was claimed by.
        reply_cue_id: where replies go.
        reply_task: the task of replies (requests only).
        payload: the execution's effective payload as received.
        meta: cuemsg's envelope fields; None for a foreign payload.
        settled: None until acked/rejected/retried/replied.
    """

    def __init__(
        self,
        *,
        body: T,
        envelope: Envelope,
        claimed: Claimed,
        mailbox_address: str,
        settled: str | None = None,
    ) -> None:
        meta = envelope.meta
        self.body = body
        self.meta = meta
        self.id = meta.id if meta is not None else f"exec:{claimed.execution_id}"
        self.kind: Kind = meta.kind if meta is not None else "message"
        self.sender = meta.sender if meta is not None else None
        self.thread = meta.thread if meta is not None else None
        self.headers: dict[str, str] = dict(meta.headers) if meta is not None else {}
        self.correlation_id = meta.correlation_id if meta is not None else None
        self.sent_at = meta.sent_at if meta is not None else None
        self.expires_at = meta.expires_at if meta is not None else None
        self.attempt = meta.attempt if meta is not None else 1
        self.deliveries = claimed.attempts or 1
        self.execution_id = claimed.execution_id
        self.cue_id = claimed.cue_id or mailbox_address
        self.task = claimed.task
        self.reply_cue_id = envelope.reply_cue_id
        self.reply_task = meta.reply_task if meta is not None else None
        self.payload: dict[str, Any] = dict(claimed.payload or {})
        self.settled = settled

    @property
    def is_request(self) -> bool:
        """True when the sender waits for a reply (`request()`)."""
        return self.kind == "request"

    @property
    def foreign(self) -> bool:
        """True for a payload with no cuemsg metadata (fired by another program)."""
        return self.meta is None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.kind} id={self.id} execution={self.execution_id} "
            f"body={self.body!r:.60}>"
        )


MessageFactory = Callable[..., Delivery[Any]]


# -- leases -----------------------------------------------------------------------------------


@dataclass
class _Lease:
    interval: float
    next_due: float
    lost: BaseException | None = None


class LeaseBook:
    """The leases a mailbox holds, and when each must be renewed.

    A lease is renewed every third of its length, from the claim on, so a
    handler running past a third of the lease keeps it; a refused renewal
    (403 another worker has it, 409 it is no longer being delivered) marks
    it lost, and the message's settlement then raises `LeaseLost`.
    """

    def __init__(self, on_hold: Callable[[], None] | None = None) -> None:
        self._held: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self.on_hold = on_hold

    def __contains__(self, execution_id: str) -> bool:
        return execution_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, execution_id: str, lease_seconds: float | None, now: float) -> None:
        """Start renewing the lease of `execution_id` (claimed at `now`)."""
        interval = max((lease_seconds or FALLBACK_LEASE_SECONDS) / 3.0, 0.05)
        with self._lock:
            self._held[execution_id] = _Lease(interval=interval, next_due=now + interval)
        if self.on_hold is not None:
            self.on_hold()

    def release(self, execution_id: str) -> None:
        """Stop renewing (the message was settled, or given up)."""
        with self._lock:
            self._held.pop(execution_id, None)

    def due(self, now: float) -> list[str]:
        """Leases to renew now; each is rescheduled one interval later."""
        out: list[str] = []
        with self._lock:
            for execution_id, lease in self._held.items():
                if lease.lost is None and lease.next_due <= now:
                    lease.next_due = now + lease.interval
                    out.append(execution_id)
        return out

    def next_due(self) -> float | None:
        """When the next renewal is due (None when nothing is held)."""
        with self._lock:
            times = [lease.next_due for lease in self._held.values() if lease.lost is None]
        return min(times) if times else None

    def mark_lost(self, execution_id: str, why: BaseException) -> bool:
        """Record that the lease is gone; True the first time."""
        with self._lock:
            lease = self._held.get(execution_id)
            if lease is None or lease.lost is not None:
                return False
            lease.lost = why
            return True

    def lost(self, execution_id: str) -> BaseException | None:
        """Why the lease was lost, or None while it holds."""
        with self._lock:
            lease = self._held.get(execution_id)
            return None if lease is None else lease.lost


# -- batched acks -----------------------------------------------------------------------------


@dataclass
class PendingAck:
    """An ack that was decided (the message id is in the dedupe store) but not yet recorded."""

    outcome: OutcomeRequest
    message_id: str
    due: float  # monotonic time by which it is to be sent
    tries: int = 0  # reports of it that failed in transit


class AckQueue:
    """Acks waiting to be recorded together with one `report_outcomes` (thread-safe).

    The lease of each waiting ack stays held (and renewed) until its report
    is answered. `on_due` is called when an ack is added, so a heartbeat
    loop sleeping past the ack's due time wakes up to send it.
    """

    def __init__(self) -> None:
        self._items: list[PendingAck] = []
        self._lock = threading.Lock()
        self.on_due: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: PendingAck) -> int:
        """Queue `item`; answers how many acks wait now."""
        with self._lock:
            self._items.append(item)
            size = len(self._items)
        if self.on_due is not None:
            self.on_due()
        return size

    def take(self) -> list[PendingAck]:
        """Every waiting ack, removed from the queue (to be reported by the caller)."""
        with self._lock:
            items, self._items = self._items, []
        return items

    def put_back(self, items: Sequence[PendingAck], due: float) -> None:
        """Queue `items` again (their report failed in transit), to be sent at `due`."""
        if not items:
            return
        for item in items:
            item.due = due
        with self._lock:
            self._items[:0] = items
        if self.on_due is not None:
            self.on_due()

    def next_due(self) -> float | None:
        """When the earliest waiting ack is due (None when none waits)."""
        with self._lock:
            return min((item.due for item in self._items), default=None)

    def due(self, now: float) -> bool:
        """True when some waiting ack is due."""
        at = self.next_due()
        return at is not None and at <= now


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
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.closed = False
        self.on_expect: Callable[[], None] | None = None  # wakes an idle reply loop

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, correlation_id: str) -> PendingReply:
        """Register a request before it is fired, so a fast reply finds it."""
        pending = PendingReply(correlation_id, self._event_factory())
        with self._lock:
            if self.closed:
                raise MailboxError("the mailbox is closed")
            self._waiting[correlation_id] = pending
        if self.on_expect is not None:
            self.on_expect()
        return pending

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
            self._answered[correlation_id] = None
            while len(self._answered) > self.RECENT:
                self._answered.popitem(last=False)
        pending.event.set()
        return "delivered"

    def give_up(self, correlation_id: str) -> PendingReply | None:
        """Stop waiting for `correlation_id`; the entry (with any reply that raced in)."""
        with self._lock:
            pending = self._waiting.pop(correlation_id, None)
            if pending is not None:
                pending.closed = True
            return pending

    def close(self) -> None:
        """Wake every waiting request (they fail: the mailbox is closing)."""
        with self._lock:
            self.closed = True
            waiting = list(self._waiting.values())
        for pending in waiting:
            pending.event.set()


# -- presence ---------------------------------------------------------------------------------


class Presence:
    """When a receiving mailbox next tells the server it is alive."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.active = False
        self.next_at = 0.0

    def start(self) -> None:
        if not self.active:
            self.active = True
            self.next_at = 0.0  # at once

    def stop(self) -> None:
        self.active = False

    def due(self, now: float) -> bool:
        if self.active and now >= self.next_at:
            self.next_at = now + self.interval
            return True
        return False

    def next_due(self) -> float | None:
        return self.next_at if self.active else None


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def default_worker_id(task: str) -> str:
    """`<task>@<host>:<pid>`: one name per process, so leases tell processes apart."""
    return f"{task}@{socket.gethostname()}:{os.getpid()}"


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= OUTCOME_TEXT_LIMIT:
        return text
    return text[: OUTCOME_TEXT_LIMIT - 3] + "..."


TRANSIENT = (TransportError, ServerError, RateLimited)


def _pause_after(exc: BaseException, failures: int) -> float:
    if isinstance(exc, RateLimited) and exc.retry_after:
        return float(exc.retry_after)
    return float(min(ERROR_PAUSE * 2 ** min(failures, 5), 5.0))


class _CachedReply(msgspec.Struct, frozen=True):
    cue_id: str
    key: str
    execution_id: str
    payload: msgspec.Raw = msgspec.Raw(b"null")  # null: too big to keep


_cached_decoder = msgspec.json.Decoder(_CachedReply)


# -- opening ------------------------------------------------------------------------------------


def open_mailbox(
    name: str,
    *,
    task: str | None,
    worker_id: str | None,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
) -> Flow[MailboxInfo]:
    """Get or create the mailbox's worker cue, named `name`.

    Creating first and looking the name up on 409 `cue_name_taken` makes
    two processes that open the same mailbox at once end up on one cue.
    """
    if task is not None and REPLY_SUFFIX in task:
        raise ValueError(f"a mailbox task must not contain {REPLY_SUFFIX!r}: {task!r}")
    wanted = task or name
    cue: Cue | None = None
    for _ in range(3):
        try:
            cue = yield CreateCue(
                name=name,
                payload={"task": wanted},
                schedule=MAILBOX_SCHEDULE,
                retry={"max_attempts": max_deliveries},
                description=f"cuemsg mailbox {name!r} (task {wanted!r})",
            )
            break
        except Conflict as exc:
            if exc.code != "cue_name_taken":
                raise
            cue = yield from find_cue(name)
            if cue is not None:
                break
            # Deleted between our create and our lookup: create again.
    if cue is None:  # pragma: no cover - a cue created and deleted three times in a row
        raise MailboxError(f"could not create or find the mailbox cue {name!r}")
    if cue.transport != "worker":
        raise MailboxError(
            f"the cue {name!r} ({cue.id}) is a {cue.transport} cue, not a mailbox (worker cue)"
        )
    have = cue.payload.get("task")
    if not isinstance(have, str):
        raise MailboxError(f"the cue {name!r} ({cue.id}) has no payload task: not a mailbox")
    if task is not None and have != task:
        raise MailboxError(f"the mailbox {name!r} routes task {have!r}, not {task!r}")
    if cue.status == "active":
        # Never fire on its own: paused (a manual fire works whatever the status).
        cue = yield UpdateCue(cue.id, {"status": "paused"})
    return MailboxInfo(
        name=name,
        address=cue.id,
        task=have,
        # One reply stream per open mailbox, not per name: two processes that open
        # the same mailbox must never claim each other's replies.
        reply_task=f"{have}{REPLY_SUFFIX}.{secrets.token_hex(4)}",
        worker_id=worker_id or default_worker_id(have),
        cue_payload=dict(cue.payload),
    )


def find_cue(name: str, page: int = 200) -> Flow[Cue | None]:
    """The cue named `name`, by listing every page (None if there is none)."""
    offset = 0
    while True:
        listing = yield ListCues(offset=offset, limit=page)
        found: Cue
        for found in listing.cues:
            if found.name == name:
                return found
        offset += len(listing.cues)
        if not listing.cues or offset >= listing.total:
            return None


# -- the core -----------------------------------------------------------------------------------


class MailboxCore:
    """Everything a mailbox decides; its flows are run by `Mailbox` or `AsyncMailbox`.

    Args:
        info: where the mailbox lives.
        config: its options.
        event_factory: makes the events a waiting request is woken by.
        make_message: builds the message objects handed to user code.
        clock: wall-clock time (UNIX seconds): expiry, timestamps.
        monotonic: a monotonic clock: deadlines and intervals.
    """

    def __init__(
        self,
        info: MailboxInfo,
        config: MailboxConfig,
        *,
        event_factory: Callable[[], Event],
        make_message: MessageFactory = Delivery,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.info = info
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.make_message = make_message
        self.leases = LeaseBook()
        self.acks = AckQueue()
        self.router = ReplyRouter(event_factory)
        self.presence = Presence(config.presence_interval)
        self.stats = MailboxStats()
        self.dedupe: DedupeStore = config.dedupe if config.dedupe is not None else MemoryDedupe()
        self.stopping = False  # receive/serve loops end after their current poll
        self.closing = False  # background loops end too
        self._tasks: dict[str, str] = {}  # cue id -> its task (require_responder)
        self._handling = 0  # handle() flows running (serve): the last to end flushes acks
        self._handling_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------

    def _dedupe_key(self, message_id: str) -> str:
        return f"{self.info.address}/{message_id}"

    def _meta_state(self, state: str, **extra: Any) -> dict[str, Any]:
        return {"cuemsg": {"state": state, **{k: v for k, v in extra.items() if v is not None}}}

    def _lease_lost(
        self, execution_id: str, message_id: str | None, why: BaseException
    ) -> LeaseLost:
        if self.leases.mark_lost(execution_id, why) or execution_id not in self.leases:
            self.stats.count("redelivered")
        what = (
            f"message {message_id} (execution {execution_id})"
            if message_id
            else (f"execution {execution_id}")
        )
        err = LeaseLost(
            f"lost the lease on {what}: {why}; it was not acked here and will be delivered again"
        )
        log.warning("%s", err)
        return err

    def backoff(self, attempt: int) -> float:
        """The delay of the retry-later after `attempt` failed (doubling)."""
        return float(self.config.retry_delay * 2 ** max(attempt - 1, 0))

    # -- sending ---------------------------------------------------------------------------

    def message_payload(
        self,
        body: Any,
        *,
        kind: Kind = "message",
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        reply_task: str | None = None,
        message_id: str | None = None,
    ) -> tuple[Meta, dict[str, Any]]:
        """The envelope of an outgoing message (pure: the id is made here, once)."""
        sent_at = utcnow()
        start = sent_at.timestamp()
        if send_at is not None:
            start = max(start, send_at.timestamp() if isinstance(send_at, datetime) else send_at)
        meta = Meta(
            id=message_id or new_id(),
            kind=kind,
            sender=self.info.address,
            correlation_id=correlation_id,
            reply_task=reply_task,
            thread=thread,
            sent_at=sent_at,
            expires_at=None if ttl is None else from_timestamp(start + ttl),
            headers=dict(with_trace(headers) or {}),  # the current span's traceparent
        )
        payload = build_payload(meta=meta, body=body, task=task, reply_cue_id=self.info.address)
        return meta, payload

    def send(
        self,
        to_cue: str,
        body: Any,
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[Sent]:
        """Fire one message at `to_cue` (keyed by its id: a retried fire makes no copy)."""
        meta, payload = self.message_payload(
            body, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
        )
        when = _as_datetime(send_at)
        fired = yield Fire(to_cue, payload, idempotency_key=meta.id, send_at=when)
        self.stats.count("sent")
        return Sent(
            id=meta.id, execution_id=fired.id, cue_id=to_cue, scheduled_for=fired.scheduled_for
        )

    def send_many(
        self,
        to_cue: str,
        bodies: Sequence[Any],
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[list[Sent]]:
        """Fire many messages at `to_cue` in as few requests as the server allows, in order."""
        when = _as_datetime(send_at)
        metas: list[Meta] = []
        fires: list[FireRequest] = []
        for body in bodies:
            meta, payload = self.message_payload(
                body, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
            metas.append(meta)
            fires.append(
                FireRequest(
                    cue_id=to_cue, payload_override=payload, send_at=when, idempotency_key=meta.id
                )
            )
        results = yield FireMany(fires)
        self.stats.count("sent", len(results))
        return [
            Sent(id=m.id, execution_id=r.id, cue_id=to_cue, scheduled_for=r.scheduled_for)
            for m, r in zip(metas, results, strict=True)
        ]

    # -- claiming --------------------------------------------------------------------------

    def claim(
        self, task: str, wait: float | None, limit: int | None, *, hold: bool = True
    ) -> Flow[list[Claimed]]:
        """Claim up to `limit` executions of `task`, waiting up to `wait` s.

        A transient failure (network, 5xx, 429) is logged and answered by a
        pause and an empty list, so loops keep going; other errors raise.
        """
        try:
            result: ClaimResult = yield Claim(self.info.worker_id, task, wait, limit)
        except TRANSIENT as exc:
            log.warning("claiming task %r failed (%s); trying again", task, exc)
            yield Sleep(_pause_after(exc, 1))
            return []
        if hold:
            now = self.monotonic()
            for claimed in result.executions:
                self.leases.hold(claimed.execution_id, claimed.lease_seconds, now)
        return list(result.executions)

    # -- receiving -------------------------------------------------------------------------

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
                yield Outcome(
                    execution_id,
                    self.info.worker_id,
                    success,
                    _cut(result),
                    _cut(error),
                    metadata,
                )
            except (Forbidden, Conflict, NotFound) as exc:
                raise self._lease_lost(execution_id, message_id, exc) from exc
        finally:
            self.leases.release(execution_id)

    def admit(self, claimed: Claimed, type: Any = None) -> Flow[Delivery[Any] | None]:
        """Read a claimed execution; the message to handle, or None if settled here.

        Settled here without the handler, each with an outcome saying why:
        an unreadable envelope or a newer format (rejected), a message past
        its deadline (expired), a redelivered id already handled (acked as
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

    def _quiet(self, flow: Flow[T]) -> Flow[T | None]:
        """Run `flow`, logging (not raising) what goes wrong: a loop must go on."""
        try:
            return (yield from flow)
        except LeaseLost:
            return None  # logged and counted where it was raised
        except CuemsgError as exc:
            log.warning("%s", exc)
            return None

    def _resend(self, record: bytes) -> Flow[str | None]:
        cached = _cached_decoder.decode(record)
        if bytes(cached.payload) == b"null":
            return cached.execution_id  # too big to keep; the first send stands
        payload = payload_from_bytes(bytes(cached.payload))
        fired = yield Fire(cached.cue_id, payload, idempotency_key=cached.key)
        return str(fired.id)

    # -- settling --------------------------------------------------------------------------

    def _begin(self, msg: Delivery[Any], verb: str) -> None:
        if msg.settled is not None:
            raise MailboxError(f"message {msg.id} is already settled ({msg.settled})")
        msg.settled = verb

    def ack(self, msg: Delivery[Any], result: str | None = None) -> Flow[None]:
        """Outcome success: the message was handled (recorded for dedupe first)."""
        self._begin(msg, "acked")
        self.dedupe.remember(self._dedupe_key(msg.id))
        yield from self._settle_eid(
            msg.execution_id,
            msg.id,
            success=True,
            result=result or f"handled message {msg.id}",
            metadata=self._meta_state("acked", id=msg.id, kind=msg.kind),
        )
        self.stats.count("acked")

    def reject(self, msg: Delivery[Any], reason: str) -> Flow[None]:
        """Outcome failure, terminal: the message shows in the dead letters with `reason`.

        A rejected request also gets an error reply, so its requester does
        not wait for its deadline.
        """
        if msg.is_request and msg.settled is None and msg.reply_cue_id:
            yield from self.reply_error(msg, "Rejected", reason)
            return
        self._begin(msg, "rejected")
        yield from self._settle_eid(
            msg.execution_id,
            msg.id,
            success=False,
            error=f"rejected: {reason}",
            metadata=self._meta_state("rejected", id=msg.id, kind=msg.kind),
        )
        self.stats.count("rejected")

    def retry_later(self, msg: Delivery[Any], delay: float, reason: str = "") -> Flow[str | None]:
        """Fire the same message again at now + `delay` (attempt + 1); close this execution.

        Past `max_attempts` the message is rejected instead (a request gets
        an error reply). Answers the new execution's id (None when rejected).
        """
        if msg.attempt >= self.config.max_attempts:
            why = f"gave up after {msg.attempt} attempts" + (f": {reason}" if reason else "")
            yield from self.reject(msg, why)
            return None
        self._begin(msg, "retried")
        attempt = msg.attempt + 1
        payload = dict(msg.payload)
        meta = dict(payload.get("cuemsg") or {"v": 1, "id": msg.id, "kind": "message"})
        meta["attempt"] = attempt
        payload["cuemsg"] = meta
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
            result=_cut(
                f"retry later: re-fired as execution {fired.id} (attempt {attempt}) "
                f"for {when.isoformat()}" + (f"; reason: {reason}" if reason else "")
            ),
            metadata=self._meta_state(
                "retried", id=msg.id, next_execution_id=fired.id, attempt=attempt
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
        if msg.settled is not None:
            raise MailboxError(f"message {msg.id} is already settled ({msg.settled})")
        kind: Kind = ("error" if error is not None else "reply") if msg.is_request else "message"
        reply_task = msg.reply_task if msg.is_request else None
        meta, payload = self.message_payload(
            body if error is None else error,
            kind=kind,
            task=reply_task,
            thread=msg.thread,
            correlation_id=msg.correlation_id or msg.id,
        )  # may raise EnvelopeError: the message stays unsettled
        self._begin(msg, "replied")
        try:
            fired = yield Fire(msg.reply_cue_id, payload, idempotency_key=meta.id)
        except BaseException:
            msg.settled = None
            raise
        self.stats.count("sent")
        encoded = payload_bytes(payload)
        record = _CachedReply(
            cue_id=msg.reply_cue_id,
            key=meta.id,
            execution_id=fired.id,
            payload=msgspec.Raw(encoded if len(encoded) <= MAX_CACHED_REPLY else b"null"),
        )
        self.dedupe.remember(self._dedupe_key(msg.id), msgspec.json.encode(record))
        what = f"error reply {error.type}: {error.message}" if error is not None else "reply"
        text = (
            f"replied: {what} sent as execution {fired.id} (correlation id {meta.correlation_id})"
        )
        metadata = self._meta_state(
            "replied" if error is None else "replied_error",
            id=msg.id,
            reply_id=meta.id,
            reply_execution_id=fired.id,
            correlation_id=meta.correlation_id,
        )
        if error is None:
            yield from self._settle_eid(
                msg.execution_id, msg.id, success=True, result=text, metadata=metadata
            )
        else:
            yield from self._settle_eid(
                msg.execution_id, msg.id, success=False, error=text, metadata=metadata
            )
        self.stats.count("replied")
        return str(fired.id)

    def heartbeat(self, msg: Delivery[Any]) -> Flow[None]:
        """Renew `msg`'s lease now (background heartbeats do this on their own)."""
        try:
            yield Heartbeat(msg.execution_id, self.info.worker_id)
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
            MailboxError: already settled.
        """
        self._begin(msg, "acked")
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
            result=_cut(f"handled message {msg.id}"),
            metadata=self._meta_state("acked", id=msg.id, kind=msg.kind),
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
            yield Sleep(_pause_after(failed, failures))

    def _flush_once(self) -> Flow[Exception | None]:
        """One report of every waiting ack; the transit error when it must be tried again."""
        send: list[PendingAck] = []
        for item in self.acks.take():
            eid = item.outcome.execution_id
            why = self.leases.lost(eid)
            if why is None:
                send.append(item)
                continue
            self._lease_lost(eid, item.message_id, why)
            self.leases.release(eid)
        if not send:
            return None
        try:
            answers = yield Outcomes([item.outcome for item in send], self.info.worker_id)
        except TRANSIENT as exc:
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
            self.acks.put_back(again, self.monotonic() + _pause_after(exc, 1))
            return exc if again else None
        except CuemsgError as exc:
            log.warning(
                "the acks of %d messages were not recorded (%s): they will be delivered again",
                len(send),
                exc,
            )
            for item in send:
                self.leases.release(item.outcome.execution_id)
            return None
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
        return None

    # -- loops -----------------------------------------------------------------------------

    def _poll(self, deadline: float | None) -> float:
        if deadline is None:
            return self.config.poll_wait
        return max(0.0, min(self.config.poll_wait, deadline - self.monotonic()))

    def receive(
        self, *, wait: float | None, limit: int | None, type: Any = None, batch: int = 1
    ) -> Flow[None]:
        """Deliver messages one by one until `limit` were, `wait` s pass with none, or stop().

        A message the caller leaves unsettled is acked when it asks for the next.
        Only `serve()` announces the worker as a responder: an idle receive loop
        costs one claim per `poll_wait` and nothing more.

        With `batch` > 1, up to `batch` messages are claimed per request (never
        more than `limit` still wants); their leases are renewed until each is
        settled. The acks of the messages left unsettled are queued (their ids
        go to the dedupe store at once) and recorded together before the next
        claim, when the loop ends, or `RECEIVE_ACK_DELAY` s after they were
        decided if the caller is slower than that. `stop()` ends the loop once
        the batch in hand is delivered. Explicit `ack()`, `reject()`,
        `retry_later()` and `reply()` are recorded at once, as with `batch=1`.
        A driver runs `flush_acks(final=True)` when the loop is closed early.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, not {batch}")
        count = 0
        deadline = None if wait is None else self.monotonic() + wait
        while not self.stopping and (limit is None or count < limit):
            if batch > 1 and self.acks:
                yield from self.flush_acks()
            want = batch if limit is None else min(batch, limit - count)
            claims = yield from self.claim(
                self.info.task, self._poll(deadline), want if want > 1 else None
            )
            if not claims:
                if deadline is not None and self.monotonic() >= deadline:
                    return
                continue
            for i, claimed in enumerate(claims):
                msg = yield from self.admit(claimed, type)
                if msg is None:
                    continue
                count += 1
                deadline = None if wait is None else self.monotonic() + wait
                try:
                    yield Deliver(msg)
                except GeneratorExit:
                    # The caller left the loop holding it: stop renewing; its lease runs out
                    # and it is delivered again (ack before breaking out to avoid that).
                    for rest in claims[i:]:
                        self.leases.release(rest.execution_id)
                    raise
                if msg.settled is None:
                    if batch == 1:
                        yield from self._quiet(self.ack(msg))
                        continue
                    with contextlib.suppress(LeaseLost):  # logged and counted where raised
                        self.queue_ack(msg, RECEIVE_ACK_DELAY)
        if self.acks:
            yield from self.flush_acks(final=True)

    def handle(
        self, claimed: Claimed, handler: Callable[[Any], Any], type: Any = None
    ) -> Flow[None]:
        """Run `handler` on one claimed execution and settle it by what happened.

        Returned value: a request is replied with it; a message is acked.
        `RetryLater`: retry-later. Another exception: a request gets an error
        reply (its requester raises `RemoteError`); a message is rejected,
        or retried (bounded) with `on_error="retry"`.

        An ack is queued, not sent: the last handler to end while none other
        runs records the waiting acks with one `report_outcomes`, as does a
        handler that finds `ACK_BATCH` waiting; otherwise the heartbeat loop
        sends them `SERVE_ACK_DELAY` s after the first was decided.
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
        if self.acks and (idle or waiting >= ACK_BATCH):
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
            try:
                result = yield CallHandler(handler, msg)
            except RetryLater as later:
                if msg.settled is None:
                    yield from self.retry_later(msg, later.delay, later.reason)
                return 0
            except Exception as exc:
                self.stats.count("handler_errors")
                name = _error_name(exc)
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
    ) -> Flow[None]:
        """Claim and handle messages, `concurrency` at a time, until stop() (or idle)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        self.presence.start()
        last = self.monotonic()
        error: Exception | None = None
        try:
            while not self.stopping:
                free = yield WaitSlots(concurrency)
                if self.stopping:
                    break
                deadline = None if idle_timeout is None else last + idle_timeout
                claims = yield from self.claim(
                    self.info.task, self._poll(deadline), min(free, SERVE_BATCH)
                )
                if not claims:
                    if deadline is not None and self.monotonic() >= deadline:
                        break
                    continue
                last = self.monotonic()
                for claimed in claims:
                    yield Spawn(self.handle(claimed, handler, type))
        except GeneratorExit:
            self.presence.stop()
            raise
        except Exception as exc:
            error = exc  # finish the handlers in hand first
        yield Drain()
        self.presence.stop()
        if self.acks:
            yield from self.flush_acks(final=True)
        if error is not None:
            raise error

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
        if require_responder:
            yield from self.check_responder(to_cue, task)
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
        deadline = self.monotonic() + timeout
        yield StartReplies()
        pending = self.router.expect(message_id)
        try:
            fired = yield Fire(to_cue, payload, idempotency_key=message_id)
            self.stats.count("sent")
            self.stats.count("requests")
            yield AwaitReply(pending, max(0.0, deadline - self.monotonic()))
        finally:
            self.router.give_up(message_id)
        reply = pending.reply
        if reply is None:
            if self.router.closed:
                raise MailboxError(f"the mailbox closed while request {message_id} waited")
            self.stats.count("timeouts")
            reason, detail = yield from self.diagnose(fired.id)
            raise RequestTimeout(
                f"no reply to request {message_id} within {timeout:g}s: {detail}",
                correlation_id=message_id,
                reason=reason,
                execution_id=fired.id,
            )
        return unwrap(reply, type)

    def diagnose(self, execution_id: str) -> Flow[tuple[TimeoutReason, str]]:
        """Why a request got no reply, read from its execution's record."""
        try:
            exe: Execution = yield GetExecution(execution_id)
        except CuemsgError as exc:
            return "unknown", f"its execution {execution_id} could not be read ({exc})"
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
            at = _parse_time(stamp.get("at")) if isinstance(stamp, dict) else None
            alive = at is not None and now - at <= ttl
        else:
            alive = any(
                task in w.handlers
                and (seen := _parse_time(w.last_heartbeat)) is not None
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
        """
        failures = 0
        while not self.closing:
            if not self.router:
                yield IdleWait(self.config.poll_wait)
                continue
            try:
                claims = yield from self.claim(
                    self.info.reply_task, self.config.poll_wait, REPLY_BATCH, hold=False
                )
                if claims:
                    yield from self.route_replies(claims)
                failures = 0
            except CuemsgError as exc:
                failures += 1
                log.warning("reply loop: %s", exc)
                yield Sleep(_pause_after(exc, failures))

    def drain_replies(self) -> Flow[None]:
        """Settle the replies already waiting (all late by now): one claim, no wait."""
        claims = yield from self.claim(self.info.reply_task, None, REPLY_BATCH, hold=False)
        if claims:
            yield from self.route_replies(claims)

    def route_replies(self, claims: Sequence[Claimed]) -> Flow[None]:
        """Hand claimed replies to their requests; ack each with what became of it."""
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
                        error=_cut(f"rejected: not a readable cuemsg reply: {exc}"),
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
                        body=_reply_body(env),
                        envelope=env,
                        claimed=claimed,
                        mailbox_address=self.info.address,
                        settled="late",
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
        answers = yield Outcomes(outcomes, self.info.worker_id)
        for item, answer in zip(outcomes, answers, strict=False):
            if isinstance(answer, CueAPIError):
                log.warning("outcome of reply %s not recorded: %s", item.execution_id, answer)
        callback = self.config.on_late_reply
        if callback is not None:
            for msg in late:
                try:
                    yield CallHandler(callback, msg)
                except Exception:
                    log.exception("on_late_reply raised")

    # -- heartbeats ------------------------------------------------------------------------

    def tick(self) -> Flow[None]:
        """Send the acks, renew the leases and tell the server this worker is alive, when due."""
        now = self.monotonic()
        if self.acks.due(now):
            yield from self.flush_acks()
        for eid in self.leases.due(now):
            try:
                yield Heartbeat(eid, self.info.worker_id)
            except (Forbidden, Conflict, NotFound) as exc:
                self._lease_lost(eid, None, exc)
            except CuemsgError as exc:
                log.debug("heartbeat of %s failed (%s); next time", eid, exc)
        if self.presence.due(now):
            try:
                yield WorkerHeartbeat(self.info.worker_id, [self.info.task])
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


class MailboxBase:
    """What `Mailbox` and `AsyncMailbox` share beyond the core: names and counters."""

    _core: MailboxCore

    @property
    def name(self) -> str:
        """The mailbox's name (its cue's name)."""
        return self._core.info.name

    @property
    def address(self) -> str:
        """The mailbox's address: its cue id. Others send to it."""
        return self._core.info.address

    @property
    def task(self) -> str:
        """The task its messages are claimed by."""
        return self._core.info.task

    @property
    def reply_task(self) -> str:
        """The task its replies come back on (`<task>.replies`, same cue)."""
        return self._core.info.reply_task

    @property
    def worker_id(self) -> str:
        """The worker name it claims, heartbeats and settles with."""
        return self._core.info.worker_id

    @property
    def stats(self) -> MailboxStats:
        """What it did so far (counters)."""
        return self._core.stats

    @property
    def pending_requests(self) -> int:
        """Requests waiting for their reply right now."""
        return len(self._core.router)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} address={self.address} task={self.task!r}>"


# -- pure helpers -----------------------------------------------------------------------------


def unwrap(reply: Envelope, type: Any = None) -> Any:
    """A reply's body, decoded to `type`; an error reply raises `RemoteError`."""
    meta = reply.meta
    if meta is not None and meta.kind == "error":
        err = reply.message if isinstance(reply.message, dict) else {}
        raise RemoteError(
            str(err.get("type", "Error")),
            str(err.get("message", "")),
            correlation_id=meta.correlation_id,
        )
    return decode_body(reply.message, type)


def _reply_body(env: Envelope) -> Any:
    return env.message


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


def _as_datetime(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return from_timestamp(float(value))


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
    lease_until = _parse_time(raw.get("lease_expires_at"))
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
