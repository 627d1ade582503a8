"""The methods of `Mailbox` and `AsyncMailbox` about the mailbox itself: waiting,
delete, and redrive (a dead letter sent again).

They drive the flows of `names.py` (the waiting count, deleting the cue) and
`redrive.py`.
Twin mixins, side by side, held equal by `tests/mailbox/test_twins.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.cueapi.models import Redriven
from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox.names import count_waiting, delete_mailbox
from cuemsg.mailbox.redrive import redrive as redrive_flow

R = TypeVar("R")


class AdminMethods:
    """`Mailbox`'s methods about the mailbox itself (waiting, delete, redrive)."""

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

    def redrive(self, execution_id: str) -> Redriven:
        """Send a dead letter (a `failed` execution) again: a new execution with the same
        message, whose envelope names the dead one (`msg.meta.redrive_of`), while
        the dead one's record names the new one. Idempotent: a second call fires
        nothing and answers `redriven=False` with the first redrive's execution.

        Raises:
            ExtensionNotAvailable: the server has no `executions.redrive` (the hosted
                CueAPI): fire the message again yourself.
            NotFound: no such execution.
            Conflict: it is not a dead letter (code `not_dead_letter`).
        """
        return self._drive(redrive_flow(execution_id))


class AsyncAdminMethods:
    """`AsyncMailbox`'s methods about the mailbox itself (waiting, delete, redrive)."""

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

    async def redrive(self, execution_id: str) -> Redriven:
        """Send a dead letter (a `failed` execution) again: a new execution with the same
        message, whose envelope names the dead one (`msg.meta.redrive_of`), while
        the dead one's record names the new one. Idempotent: a second call fires
        nothing and answers `redriven=False` with the first redrive's execution.

        Raises:
            ExtensionNotAvailable: the server has no `executions.redrive` (the hosted
                CueAPI): fire the message again yourself.
            NotFound: no such execution.
            Conflict: it is not a dead letter (code `not_dead_letter`).
        """
        return await self._drive(redrive_flow(execution_id))
