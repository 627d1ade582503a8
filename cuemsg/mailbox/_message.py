"""`Message` and `AsyncMessage`: a received message and the verbs that settle it.

Both are a `Delivery` (the data) that forwards each verb to its mailbox; they
sit side by side so the twins read together (`tests/mailbox/test_twins.py`
holds their surfaces equal).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from cuemsg.mailbox._records import Delivery

if TYPE_CHECKING:  # the mailboxes import this module; only their types are needed here
    from cuemsg.mailbox.aio import AsyncMailbox
    from cuemsg.mailbox.sync import Mailbox

T = TypeVar("T")


class Message(Delivery[T]):
    """A message received by a `Mailbox`: its body, metadata, and how to settle it.

    Settle it once: `ack()`, `reject(reason)`, `retry_later(delay)` or
    `reply(body)`. A message left unsettled is acked when the `receive()`
    loop moves on (by `serve()` as the handler's result says).
    """

    def __init__(self, mailbox: Mailbox, **fields: Any) -> None:
        super().__init__(**fields)
        self._mailbox = mailbox

    if TYPE_CHECKING:  # `Delivery.cancelled` makes it, with `_new_cancel_event`

        @property
        def cancelled(self) -> threading.Event: ...

    def ack(self, result: str | None = None) -> None:
        """Record success (the outcome's `result` text may be given).

        Raises:
            LeaseLost: the lease passed to another receiver; nothing was recorded.
            AlreadySettled: it was already settled (`.settled` says how).
        """
        self._mailbox.ack(self, result)

    def reject(self, reason: str) -> None:
        """Record failure, for good: the message becomes a dead letter with `reason`."""
        self._mailbox.reject(self, reason)

    def retry_later(self, delay: float = 1.0, reason: str = "") -> str | None:
        """Deliver it again in `delay` seconds (bounded by `max_attempts`, then rejected).

        Returns:
            The new execution's id, or None when the attempts ran out.
        """
        return self._mailbox.retry_later(self, delay, reason)

    def reply(self, body: Any) -> str:
        """Answer the sender (a request's requester gets `body`). Returns the reply's execution."""
        return self._mailbox.reply(self, body)

    def reply_error(self, type: str, message: str) -> str:
        """Answer a request with an error: its requester raises `RemoteError(type, message)`."""
        return self._mailbox.reply_error(self, type, message)

    def heartbeat(self) -> None:
        """Renew the lease now (the mailbox also does it every third of the lease)."""
        self._mailbox.heartbeat(self)


class AsyncMessage(Delivery[T]):
    """A message received by an `AsyncMailbox`; the async twin of `Message`."""

    def __init__(self, mailbox: AsyncMailbox, **fields: Any) -> None:
        super().__init__(**fields)
        self._mailbox = mailbox

    def _new_cancel_event(self) -> anyio.Event:
        return anyio.Event()

    if TYPE_CHECKING:  # as `Message.cancelled`

        @property
        def cancelled(self) -> anyio.Event: ...

    async def ack(self, result: str | None = None) -> None:
        """Record success (the outcome's `result` text may be given).

        Raises:
            LeaseLost: the lease passed to another receiver; nothing was recorded.
            AlreadySettled: it was already settled (`.settled` says how).
        """
        await self._mailbox.ack(self, result)

    async def reject(self, reason: str) -> None:
        """Record failure, for good: the message becomes a dead letter with `reason`."""
        await self._mailbox.reject(self, reason)

    async def retry_later(self, delay: float = 1.0, reason: str = "") -> str | None:
        """Deliver it again in `delay` seconds (bounded by `max_attempts`, then rejected).

        Returns:
            The new execution's id, or None when the attempts ran out.
        """
        return await self._mailbox.retry_later(self, delay, reason)

    async def reply(self, body: Any) -> str:
        """Answer the sender (a request's requester gets `body`). Returns the reply's execution."""
        return await self._mailbox.reply(self, body)

    async def reply_error(self, type: str, message: str) -> str:
        """Answer a request with an error: its requester raises `RemoteError(type, message)`."""
        return await self._mailbox.reply_error(self, type, message)

    async def heartbeat(self) -> None:
        """Renew the lease now (the mailbox also does it every third of the lease)."""
        await self._mailbox.heartbeat(self)
