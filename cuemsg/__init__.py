"""cuemsg: accountable messaging between AI agents on top of CueAPI."""

from __future__ import annotations

import logging as _logging
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from cuemsg._exceptions import (
    AlreadyCollected,
    AlreadySettled,
    AuthenticationError,
    ClaimFailed,
    Conflict,
    CueAPIError,
    CuemsgError,
    EnvelopeError,
    ExtensionNotAvailable,
    Forbidden,
    LeaseLost,
    MailboxError,
    MailboxNotFound,
    MissingAPIKey,
    NoReply,
    NoResponder,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RemoteError,
    ReplyNotReady,
    RequestTimeout,
    RetryLater,
    ServerError,
    StorageError,
    StorageFull,
    StorageOpenError,
    TransportError,
    TransportTimeout,
    ValidationError,
)
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import (
    AsyncMailbox,
    AsyncMessage,
    DedupeStore,
    GatherResult,
    Mailbox,
    MailboxAddress,
    MailboxStats,
    MemoryDedupe,
    Message,
    Receipt,
    Sent,
    Settled,
    SQLiteDedupe,
    Subscription,
    ThreadEntry,
    Ticket,
    TicketStatus,
)
from cuemsg.signing import SigningKey

# A library logs; the application decides where to. No output unless logging is set up.
_logging.getLogger("cuemsg").addHandler(_logging.NullHandler())

try:
    __version__ = _version("cuemsg")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AlreadyCollected",
    "AlreadySettled",
    "AsyncCueClient",
    "AsyncMailbox",
    "AsyncMessage",
    "AuthenticationError",
    "ClaimFailed",
    "Conflict",
    "CueAPIError",
    "CueClient",
    "CuemsgError",
    "DedupeStore",
    "EnvelopeError",
    "ExtensionNotAvailable",
    "Forbidden",
    "GatherResult",
    "LeaseLost",
    "Mailbox",
    "MailboxAddress",
    "MailboxError",
    "MailboxNotFound",
    "MailboxStats",
    "MemoryDedupe",
    "Message",
    "MissingAPIKey",
    "NoReply",
    "NoResponder",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Receipt",
    "RemoteError",
    "ReplyNotReady",
    "RequestTimeout",
    "RetryLater",
    "SQLiteDedupe",
    "Sent",
    "ServerError",
    "Settled",
    "SigningKey",
    "StorageError",
    "StorageFull",
    "StorageOpenError",
    "Subscription",
    "ThreadEntry",
    "Ticket",
    "TicketStatus",
    "TransportError",
    "TransportTimeout",
    "ValidationError",
    "__version__",
]
