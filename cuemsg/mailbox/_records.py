"""What a mailbox hands out and keeps: `Sent`, `MailboxStats`, `Delivery`, cached replies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from cuemsg._exceptions import AlreadySettled
from cuemsg.cueapi.models import Claimed
from cuemsg.envelope import Envelope, Kind

T = TypeVar("T")


class Settled(str, Enum):
    """How a message was settled (`Delivery.settled`); compares equal to its value."""

    ACKED = "acked"
    REJECTED = "rejected"
    RETRIED = "retried"
    REPLIED = "replied"
    #: A reply that came after its request stopped waiting (handed to `on_late_reply`).
    LATE = "late"
    #: Left open on purpose (`leave()`): answered later, e.g. by `reply_to_execution`.
    LEFT = "left"

    def __str__(self) -> str:
        return self.value


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


class MailboxStats:
    """Counters of what a mailbox did (thread-safe). Read them as attributes or `as_dict()`.

    Attributes:
        sent: messages fired (requests and replies included).
        received: messages handed to a handler or to `receive()`.
        acked, rejected, retried, replied: settled that way.
        expired: skipped because their deadline had passed (outcome: expired).
        duplicates: redelivered ids acked without calling the handler.
        bad: payloads that were not readable envelopes (rejected).
        unsigned: unsigned or forged messages refused by `require_signed` (rejected).
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
        "unsigned",
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


class CancelEvent(Protocol):
    """`Delivery.cancelled`: a `threading.Event`, or an `anyio.Event` for `AsyncMessage`."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class Delivery(Generic[T]):
    """A received message: its body and metadata (the data part of `Message`).

    Attributes:
        body: the body, decoded to the type the receiver named (else JSON builtins).
        id: the message id (for a foreign payload, `"exec:<execution id>"`).
        kind: `message`, `request`, `reply` or `error`.
        sender: the sender mailbox's address, when it said.
        sender_name: the sender mailbox's name, when it said (older senders did not).
        thread: the conversation id, if any.
        topic: the topic it was published on (`publish`), if any.
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
        settled: None until settled, then how (`Settled`: acked, rejected, retried,
            replied; `late` for a late reply).
        cancelled: an event `serve(on_busy="interrupt")` sets when a newer message
            of the same thread arrives while the handler runs (a `threading.Event`;
            an `anyio.Event` on `AsyncMessage`), made on first use. The handler may
            check it and return early.
        notes: what the busy policy did to it (`{"busy": "queued", ...}`), added to
            its outcome's metadata.
    """

    def __init__(
        self,
        *,
        body: T,
        envelope: Envelope,
        claimed: Claimed,
        mailbox_address: str,
        settled: Settled | None = None,
        cancelled: CancelEvent | None = None,
    ) -> None:
        meta = envelope.meta
        self.body = body
        self.meta = meta
        self.id = meta.id if meta is not None else f"exec:{claimed.execution_id}"
        self.kind: Kind = meta.kind if meta is not None else "message"
        self.sender = meta.sender if meta is not None else None
        self.sender_name = meta.sender_name if meta is not None else None
        self.thread = meta.thread if meta is not None else None
        self.topic = meta.topic if meta is not None else None
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
        self.settled: Settled | None = settled
        self.notes: dict[str, str] = {}
        if cancelled is not None:
            self._cancelled = cancelled

    def _new_cancel_event(self) -> CancelEvent:
        return threading.Event()

    @property
    def cancelled(self) -> CancelEvent:
        """See the class docstring. Made on first use: few messages ever need one, and
        an event made for each was 2% of the client's CPU per message received."""
        event: CancelEvent | None = self.__dict__.get("_cancelled")
        if event is None:
            # setdefault: two threads asking at once get the same event.
            event = self.__dict__.setdefault("_cancelled", self._new_cancel_event())
        return event

    def leave(self) -> None:
        """Leave it unsettled on purpose: the receive loop will not ack it.

        Another process may settle it later (`cuemsg reply EXECUTION_ID`, or
        `reply_to_execution`); otherwise its lease lapses once this mailbox
        stops renewing it, and it is delivered again.

        Raises:
            AlreadySettled: it was already settled (`.settled` says how).
        """
        if self.settled is not None:
            raise AlreadySettled(self.id, self.settled)
        self.settled = Settled.LEFT

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


class CachedReply(msgspec.Struct, frozen=True):
    cue_id: str
    key: str
    execution_id: str
    payload: msgspec.Raw = msgspec.Raw(b"null")  # null: too big to keep


cached_reply_decoder = msgspec.json.Decoder(CachedReply)
