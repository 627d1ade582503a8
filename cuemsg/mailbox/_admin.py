"""The methods of `Mailbox` and `AsyncMailbox` about the mailbox itself: waiting, delete.

They drive the flows of `names.py` (the waiting count, deleting the cue).
Twin mixins, side by side, held equal by `tests/mailbox/test_twins.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox.names import count_waiting, delete_mailbox

R = TypeVar("R")


class AdminMethods:
    """`Mailbox`'s methods about the mailbox itself (waiting, delete)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # Mailbox's own driver

        def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R: ...

        @property
        def address(self) -> str: ...
        @property
        def task(self) -> str: ...

    def waiting(self) -> int:
        """How many messages wait in this mailbox: sent, not yet claimed.

        Replies to its own requests are not counted. Costs one request per
        200 messages waiting.
        """
        return self._drive(count_waiting(self.address, self.task))

    def delete(self, *, force: bool = False) -> int:
        """Delete this mailbox (its cue); refused while messages wait in it.

        Its loops stop; close it as usual (the `with` block does). Sends to
        its address then fail with `NotFound`.

        Args:
            force: delete it even with messages waiting: they are rejected
                first ("the mailbox was deleted": dead letters, and the
                requester of a request gets `NoReply`).

        Returns:
            How many messages were waiting (0 unless `force`).

        Raises:
            MailboxError: messages are waiting and `force` is False (the error
                says how many).
        """
        flow = delete_mailbox(self._core, force=force)
        waiting = self._drive(flow)
        self._core.stopping = True
        return waiting


class AsyncAdminMethods:
    """`AsyncMailbox`'s methods about the mailbox itself (waiting, delete)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # AsyncMailbox's own driver

        async def _drive(
            self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
        ) -> R: ...

        @property
        def address(self) -> str: ...
        @property
        def task(self) -> str: ...

    async def waiting(self) -> int:
        """How many messages wait in this mailbox: sent, not yet claimed.

        Replies to its own requests are not counted. Costs one request per
        200 messages waiting.
        """
        return await self._drive(count_waiting(self.address, self.task))

    async def delete(self, *, force: bool = False) -> int:
        """Delete this mailbox (its cue); refused while messages wait in it.

        Its loops stop; close it as usual (the `with` block does). Sends to
        its address then fail with `NotFound`.

        Args:
            force: delete it even with messages waiting: they are rejected
                first ("the mailbox was deleted": dead letters, and the
                requester of a request gets `NoReply`).

        Returns:
            How many messages were waiting (0 unless `force`).

        Raises:
            MailboxError: messages are waiting and `force` is False (the error
                says how many).
        """
        flow = delete_mailbox(self._core, force=force)
        waiting = await self._drive(flow)
        self._core.stopping = True
        return waiting
