"""The whole cuemsg error tree.

```
CuemsgError
├── MissingAPIKey           no key given and none in CUEAPI_API_KEY (also a ValueError)
├── ExtensionNotAvailable   a call needs an extension the server does not list
├── TransportError          network failure; the httpx error stays in __cause__
│   └── TransportTimeout    also a builtin TimeoutError
├── CueAPIError             a CueAPI error body: .status .code .message .field
│   ├── AuthenticationError       401
│   ├── Forbidden                 403 (e.g. not_execution_owner)
│   ├── NotFound                  404
│   │   └── MailboxNotFound       no mailbox of that name (.name, .near: close names)
│   ├── Conflict                  409
│   │   └── ClaimFailed           409 claim_failed
│   ├── PayloadTooLarge           413
│   ├── ValidationError           422 (.field names the offending field)
│   ├── RateLimited               429 (.retry_after, seconds)
│   └── ServerError               5xx
├── EnvelopeError           a payload that is not a readable cuemsg envelope
├── MailboxError
│   ├── RequestTimeout      no reply before the deadline (also a TimeoutError)
│   ├── RemoteError         the responder's handler raised (.type, .message)
│   ├── NoReply             the request was settled with no reply (.worker_id, .settled)
│   ├── NoResponder         require_responder=True and no live worker for the task
│   ├── LeaseLost           heartbeat/outcome refused: another worker holds it now
│   ├── ReplyNotReady       collect(wait=...) ended before the reply came (also a TimeoutError)
│   ├── AlreadyCollected    a ticket's reply was collected before (.collected_by, .collected_at)
│   └── AlreadySettled      a message settled twice (.message_id, .settled: how first)
└── StorageError            server side only
    ├── StorageFull         the disk (or database) is full: writes refused, reads go on
    └── StorageOpenError    the database cannot be opened (.path, .reason)
```

`RetryLater(delay=...)` is raised by a handler to ask for redelivery later:
control flow, not an error, so it sits outside the tree.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyCollected",
    "AlreadySettled",
    "AuthenticationError",
    "ClaimFailed",
    "Conflict",
    "CueAPIError",
    "CuemsgError",
    "EnvelopeError",
    "ExtensionNotAvailable",
    "Forbidden",
    "LeaseLost",
    "MailboxError",
    "MailboxNotFound",
    "MissingAPIKey",
    "NoReply",
    "NoResponder",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RemoteError",
    "ReplyNotReady",
    "RequestTimeout",
    "RetryLater",
    "ServerError",
    "StorageError",
    "StorageFull",
    "StorageOpenError",
    "TransportError",
    "TransportTimeout",
    "ValidationError",
]


class CuemsgError(Exception):
    """Root of every error cuemsg raises."""


class MissingAPIKey(CuemsgError, ValueError):
    """No API key: pass `api_key=` or set the `CUEAPI_API_KEY` environment variable."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "no CueAPI key: pass api_key=... or set the CUEAPI_API_KEY environment variable "
            "(get a key with CueClient(...).register(email))"
        )


class ExtensionNotAvailable(CuemsgError):
    """The server does not list the extension a call needs (or extensions are off)."""

    def __init__(self, extension: str) -> None:
        super().__init__(
            f"the server does not serve the {extension!r} extension "
            "(or the client was made with use_extensions=False)"
        )
        self.extension = extension


class TransportError(CuemsgError):
    """The request never got an HTTP answer (connection refused, reset, ...)."""


class TransportTimeout(TransportError, TimeoutError):
    """The request timed out before an answer arrived."""


class CueAPIError(CuemsgError):
    """The server answered with a CueAPI error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        field: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.body = body or {}

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.status} {self.code}: {self.message}{where}"

    @staticmethod
    def from_response(status: int, body: Any, retry_after: float | None = None) -> CueAPIError:
        """Build the subclass that fits an HTTP status and a CueAPI error body."""
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or "error")
            message = str(err.get("message") or code)
            field = err.get("field")
        else:
            code, message, field = "http_error", f"HTTP {status}", None
            if isinstance(body, dict) and "detail" in body:  # FastAPI-style bodies
                message = str(body["detail"])
        kwargs: dict[str, Any] = {
            "status": status,
            "code": code,
            "field": str(field) if field is not None else None,
            "body": body if isinstance(body, dict) else None,
        }
        if status == 429:
            return RateLimited(message, retry_after=retry_after, **kwargs)
        if status == 409 and code == "claim_failed":
            return ClaimFailed(message, **kwargs)
        cls = _BY_STATUS.get(status)
        if cls is None:
            cls = ServerError if status >= 500 else CueAPIError
        return cls(message, **kwargs)


class AuthenticationError(CueAPIError):
    """401: the API key is missing or unknown."""


class Forbidden(CueAPIError):
    """403: e.g. a heartbeat or outcome from a worker that does not hold the lease."""


class NotFound(CueAPIError):
    """404: no such cue, execution or route (or it belongs to another tenant)."""


class MailboxNotFound(NotFound):
    """No mailbox of that name; `near` lists the tenant's mailboxes with close names."""

    def __init__(self, name: str, near: list[str]) -> None:
        hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
        super().__init__(f"no mailbox named {name!r}{hint}", status=404, code="mailbox_not_found")
        self.name = name
        self.near = near


class Conflict(CueAPIError):
    """409: the request conflicts with the current state."""


class ClaimFailed(Conflict):
    """409 claim_failed: someone else holds the execution, or nothing is claimable."""


class PayloadTooLarge(CueAPIError):
    """413: the request body is over the server's limit."""


class ValidationError(CueAPIError):
    """422: the body is malformed; `field` names the offending field when known."""


class RateLimited(CueAPIError):
    """429: too many requests; wait `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(CueAPIError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[CueAPIError]] = {
    401: AuthenticationError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
}


class EnvelopeError(CuemsgError):
    """A payload is not a cuemsg envelope this version can read, or cannot be encoded."""


class MailboxError(CuemsgError):
    """Errors of the Mailbox layer."""


class RequestTimeout(MailboxError, TimeoutError):
    """No reply arrived before the request's deadline.

    `reason` tells the requester's three failures apart (read from the
    request's execution): `"no_responder"` (nobody claimed it),
    `"dead_responder"` (claimed, then the lease ran out with no outcome),
    `"slow_responder"` (still being handled, or answered after the
    deadline), or `"unknown"`. `execution_id` is the request's execution.
    """

    def __init__(
        self,
        message: str,
        *,
        correlation_id: str | None = None,
        reason: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id
        self.reason = reason
        self.execution_id = execution_id


class RemoteError(MailboxError):
    """The responder's handler raised; `type` and `message` describe its exception."""

    def __init__(self, type: str, message: str, *, correlation_id: str | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.correlation_id = correlation_id


class NoReply(MailboxError):
    """The request was settled without a reply: it will never get one.

    The responder's mailbox says so at once (a notice on the reply stream);
    a request whose deadline passes first reads it from the request's record.
    `settled` is how (`"acked"`, `"rejected"`), `worker_id` who did it,
    `reason` the reject's reason (None for an ack).
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: str | None = None,
        settled: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.settled = settled
        self.reason = reason
        self.correlation_id = correlation_id
        self.execution_id = execution_id


class NoResponder(MailboxError):
    """`require_responder=True` and no worker for the task heartbeated recently."""


class LeaseLost(MailboxError):
    """The lease on a message passed to another worker; its ack was not recorded."""


class ReplyNotReady(MailboxError, TimeoutError):
    """`collect(ticket, wait=...)` waited and the reply has not come; its deadline is ahead.

    The ticket stays collectable: collect it again later (from any process).
    """

    def __init__(self, message: str, *, correlation_id: str) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


class AlreadyCollected(MailboxError):
    """A ticket's reply was collected before: a reply is collected exactly once.

    `collected_by` is the worker that collected it, `collected_at` when (ISO 8601).
    """

    def __init__(self, correlation_id: str, collected_by: str, collected_at: str) -> None:
        super().__init__(
            f"the reply to ticket {correlation_id} was already collected at {collected_at} "
            f"by worker {collected_by!r}"
        )
        self.correlation_id = correlation_id
        self.collected_by = collected_by
        self.collected_at = collected_at


class AlreadySettled(MailboxError):
    """A message was settled twice; `settled` says how it was settled first.

    A message is settled once: acked, rejected, retried later or replied to.
    """

    def __init__(self, message_id: str, settled: str) -> None:
        super().__init__(f"message {message_id} is already settled ({settled})")
        self.message_id = message_id
        self.settled = settled


class StorageError(CuemsgError):
    """The embedded server's storage failed (server side only)."""


class StorageFull(StorageError):
    """The storage has no room left: writes fail until space is freed; reads still work."""


class StorageOpenError(StorageError):
    """The database at `path` cannot be opened; `reason` says why, in a few words.

    `str()` is one line naming both, fit to print as it is (the CLI does).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot open the database {path!r}: {reason}")
        self.path = path
        self.reason = reason


class RetryLater(Exception):
    """Raised by a handler: redeliver this message after `delay` seconds."""

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay
        self.reason = reason
