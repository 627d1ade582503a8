"""cuemsg: accountable messaging between AI agents on top of CueAPI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from cuemsg._exceptions import (
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
    MissingAPIKey,
    NoResponder,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RemoteError,
    RequestTimeout,
    RetryLater,
    ServerError,
    StorageError,
    TransportError,
    TransportTimeout,
    ValidationError,
)
from cuemsg.cueapi import AsyncCueClient, CueClient

try:
    __version__ = _version("cuemsg")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AsyncCueClient",
    "AuthenticationError",
    "ClaimFailed",
    "Conflict",
    "CueAPIError",
    "CueClient",
    "CuemsgError",
    "EnvelopeError",
    "ExtensionNotAvailable",
    "Forbidden",
    "LeaseLost",
    "MailboxError",
    "MissingAPIKey",
    "NoResponder",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RemoteError",
    "RequestTimeout",
    "RetryLater",
    "ServerError",
    "StorageError",
    "TransportError",
    "TransportTimeout",
    "ValidationError",
    "__version__",
]
