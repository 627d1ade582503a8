"""The settle verbs of `Mailbox` and `AsyncMailbox`: ack, reject, retry_later, reply...

What `Message` / `AsyncMessage` forward to: each drives one flow of the
core's `SettleFlows` (`_settle.py`, where the decisions are). Twin mixins,
side by side, held equal by `tests/mailbox/test_twins.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox._records import Delivery

R = TypeVar("R")


class SettleMethods:
    """`Mailbox`'s settle verbs (ack, reject, retry_later, reply, reply_error, heartbeat)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # Mailbox's own driver

        def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R: ...

    def ack(self, msg: Delivery[Any], result: str | None = None) -> None:
        """See `Message.ack`."""
        self._drive(self._core.ack(msg, result))

    def reject(self, msg: Delivery[Any], reason: str) -> None:
        """See `Message.reject`."""
        self._drive(self._core.reject(msg, reason))

    def retry_later(self, msg: Delivery[Any], delay: float = 1.0, reason: str = "") -> str | None:
        """See `Message.retry_later`."""
        return self._drive(self._core.retry_later(msg, delay, reason))

    def reply(self, msg: Delivery[Any], body: Any) -> str:
        """See `Message.reply`."""
        return self._drive(self._core.reply(msg, body))

    def reply_error(self, msg: Delivery[Any], type: str, message: str) -> str:
        """See `Message.reply_error`."""
        return self._drive(self._core.reply_error(msg, type, message))

    def heartbeat(self, msg: Delivery[Any]) -> None:
        """See `Message.heartbeat`."""
        self._drive(self._core.heartbeat(msg))


class AsyncSettleMethods:
    """`AsyncMailbox`'s settle verbs (ack, reject, retry_later, reply, reply_error, heartbeat)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # AsyncMailbox's own driver

        async def _drive(
            self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
        ) -> R: ...

    async def ack(self, msg: Delivery[Any], result: str | None = None) -> None:
        """See `AsyncMessage.ack`."""
        await self._drive(self._core.ack(msg, result))

    async def reject(self, msg: Delivery[Any], reason: str) -> None:
        """See `AsyncMessage.reject`."""
        await self._drive(self._core.reject(msg, reason))

    async def retry_later(
        self, msg: Delivery[Any], delay: float = 1.0, reason: str = ""
    ) -> str | None:
        """See `AsyncMessage.retry_later`."""
        return await self._drive(self._core.retry_later(msg, delay, reason))

    async def reply(self, msg: Delivery[Any], body: Any) -> str:
        """See `AsyncMessage.reply`."""
        return await self._drive(self._core.reply(msg, body))

    async def reply_error(self, msg: Delivery[Any], type: str, message: str) -> str:
        """See `AsyncMessage.reply_error`."""
        return await self._drive(self._core.reply_error(msg, type, message))

    async def heartbeat(self, msg: Delivery[Any]) -> None:
        """See `AsyncMessage.heartbeat`."""
        await self._drive(self._core.heartbeat(msg))
