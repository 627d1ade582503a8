"""Mailboxes: send, receive and request/reply between agents over CueAPI.

`Mailbox` (sync) and `AsyncMailbox` (async) drive one sans-I/O core
(`_core.py` and the flow modules it joins); see `docs/mailbox.md` for the delivery semantics.
"""

from cuemsg.mailbox._config import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_POLL_WAIT,
    DEFAULT_PRESENCE_INTERVAL,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_REQUEST_TIMEOUT,
    MAILBOX_SCHEDULE,
    REPLY_SUFFIX,
)
from cuemsg.mailbox._records import Delivery, MailboxStats, Sent, Settled
from cuemsg.mailbox._thread_state import BusyPolicy
from cuemsg.mailbox._threads import ThreadEntry
from cuemsg.mailbox._topics import Subscription
from cuemsg.mailbox.aio import AsyncMailbox, AsyncMessage
from cuemsg.mailbox.dedupe import DedupeStore, MemoryDedupe, SQLiteDedupe
from cuemsg.mailbox.gather import GatherResult, Receipt
from cuemsg.mailbox.names import MailboxAddress
from cuemsg.mailbox.sync import Mailbox, Message
from cuemsg.mailbox.ticket import Ticket, TicketStatus

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_POLL_WAIT",
    "DEFAULT_PRESENCE_INTERVAL",
    "DEFAULT_PRESENCE_TTL",
    "DEFAULT_REQUEST_TIMEOUT",
    "MAILBOX_SCHEDULE",
    "REPLY_SUFFIX",
    "AsyncMailbox",
    "AsyncMessage",
    "BusyPolicy",
    "DedupeStore",
    "Delivery",
    "GatherResult",
    "Mailbox",
    "MailboxAddress",
    "MailboxStats",
    "MemoryDedupe",
    "Message",
    "Receipt",
    "SQLiteDedupe",
    "Sent",
    "Settled",
    "Subscription",
    "ThreadEntry",
    "Ticket",
    "TicketStatus",
]
