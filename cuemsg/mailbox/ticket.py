"""Values of durable requests: `Ticket` (what `submit` hands out) and `TicketStatus`.

A ticket is everything a process needs to collect a reply later, from
anywhere the mailbox can be opened: the correlation id, the request's
execution, its deadline and the reply's routing (the requester's cue and
the reply task of this one request). `str(ticket)` is one line of text
that `Ticket.parse` reads back, so it can be kept in a database row, a
file or an LLM's context.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from cuemsg.envelope import from_timestamp

__all__ = ["TICKET_PREFIX", "Ticket", "TicketState", "TicketStatus"]

#: How the text form of a ticket starts (`str(ticket)`).
TICKET_PREFIX = "cuemsg-ticket:"


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    """A request in flight, collectable by any process that opens the requester's mailbox.

    Attributes:
        correlation_id: the request's id; its reply carries it.
        request_execution_id: the request's execution on the responder's cue.
        to: the responder's address (cue id).
        deadline: UNIX seconds after which the request expires, and so does its reply.
        reply_cue_id: the requester's mailbox (its cue id): replies are fired there.
        reply_task: the task of this request's reply alone.
        record_execution_id: the ticket's own record on the requester's cue
            (`pending()` lists these; it says when and by whom the reply was collected).
    """

    correlation_id: str
    request_execution_id: str
    to: str
    deadline: float
    reply_cue_id: str
    reply_task: str
    record_execution_id: str | None = None

    @property
    def expires_at(self) -> datetime:
        """The deadline as a UTC datetime."""
        return from_timestamp(self.deadline)

    def __str__(self) -> str:
        data = base64.urlsafe_b64encode(_encode(self)).rstrip(b"=").decode("ascii")
        return f"{TICKET_PREFIX}{data}"

    @classmethod
    def parse(cls, text: str) -> Ticket:
        """Read a ticket back from `str(ticket)`.

        Raises:
            ValueError: `text` is not a ticket (says what is wrong with it).
        """
        if not isinstance(text, str):
            raise ValueError(f"a ticket is a string, not {type(text).__name__}")
        text = text.strip()
        if not text.startswith(TICKET_PREFIX):
            raise ValueError(f"not a cuemsg ticket (it must start with {TICKET_PREFIX!r})")
        data = text[len(TICKET_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not a cuemsg ticket: its body is not base64url ({exc})") from exc
        try:
            return _decode(raw)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a cuemsg ticket: {exc}") from exc


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Ticket).decode

TicketState = Literal["waiting", "in_progress", "answered", "collected", "failed", "expired"]


@dataclass(frozen=True)
class TicketStatus:
    """Where a ticket's request is (`status(ticket)`); reading it consumes nothing.

    Attributes:
        state: `waiting` (no responder holds it), `in_progress` (a responder
            holds it), `answered` (a reply waits to be collected), `collected`,
            `failed` (it ended with no reply coming) or `expired` (its deadline
            passed before the reply was collected).
        detail: one sentence saying why, from the server's records.
        worker: the responder's worker while in progress (else the last one known).
        attempts: claims of the request so far.
        error: `answered` with an error reply (collect raises `RemoteError`).
        collected_by, collected_at: who collected the reply, and when (ISO 8601).
    """

    state: TicketState
    detail: str
    worker: str | None = None
    attempts: int = 0
    error: bool = False
    collected_by: str | None = None
    collected_at: str | None = None
