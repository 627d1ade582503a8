"""The durable-request methods of `Mailbox` and `AsyncMailbox`: tickets and gather.

Thin twins over the flows of `tickets` and `gather`, kept apart from
`sync.py` and `aio.py` (as the thread and topic methods are, in
`_conversations`) so each shell stays small; the mailboxes inherit them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.mailbox._config import DEFAULT_REQUEST_TIMEOUT
from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox.gather import GatherResult
from cuemsg.mailbox.ticket import Ticket, TicketStatus

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

R = TypeVar("R")

#: `submit()` deadline when none is given (seconds): durable requests are for long work.
DEFAULT_SUBMIT_TIMEOUT = 600.0


class DurableMethods:
    """`Mailbox`'s tickets and gather."""

    _core: MailboxCore

    if TYPE_CHECKING:

        def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R: ...

    def submit(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_SUBMIT_TIMEOUT,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Ticket:
        """Send a request and return at once with its `Ticket`; collect the reply later.

        The ticket outlives this process: any process that opens this mailbox
        can `collect` it (`str(ticket)` / `Ticket.parse` to keep it anywhere).

        Args:
            to_cue: the responder's address.
            msg: the request body.
            timeout: seconds until the request (and its reply) expire.
            task: the routing task; default the responder cue's task.
            thread: conversation id. headers: free string metadata.

        Returns:
            The `Ticket`.

        Raises:
            NotFound: no cue `to_cue`. EnvelopeError: the body cannot be encoded.
        """
        return self._drive(
            self._core.submit(
                to_cue, msg, timeout=timeout, task=task, thread=thread, headers=headers
            )
        )

    def collect(self, ticket: Ticket, *, wait: float | None = None, type: Any = None) -> Any:
        """The reply to `ticket`, collected exactly once (from any process of this mailbox).

        Args:
            ticket: what `submit` returned (or `Ticket.parse(text)`).
            wait: seconds to wait for the reply; None waits up to the deadline.
            type: decode the reply body to this type.

        Returns:
            The reply body.

        Raises:
            RemoteError: the responder's handler raised.
            RequestTimeout: the deadline passed with no reply collected (`.reason`).
            ReplyNotReady: `wait` ran out before the reply came; collect again later.
            AlreadyCollected: it was collected before (says when, and by which worker).
            MailboxError: the ticket belongs to another mailbox.
        """
        return self._drive(self._core.collect(ticket, wait=wait, type=type))

    def status(self, ticket: Ticket) -> TicketStatus:
        """Where `ticket`'s request is, read from the server; consumes nothing.

        Returns:
            A `TicketStatus`: `waiting`, `in_progress` (worker, attempts),
            `answered`, `collected`, `failed` or `expired`, with a detail.
        """
        return self._drive(self._core.status(ticket))

    def pending(self) -> list[Ticket]:
        """This mailbox's outstanding tickets, read from the server (soonest deadline first).

        Expired tickets and expired uncollected replies are settled first (`sweep`).
        """
        return self._drive(self._core.pending())

    def sweep(self) -> int:
        """Record as expired every ticket and uncollected reply of this mailbox past its
        deadline; answers how many were settled.
        """
        return self._drive(self._core.sweep())

    def gather(
        self,
        to: Sequence[str],
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        need: int | None = None,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> GatherResult:
        """Send `msg` as a request to each of `to`; return when all have answered, when
        `need` have replied, or at the deadline.

        Args:
            to: the recipients' addresses (each once).
            msg: the request body, the same for all.
            timeout: seconds to wait; also each request's deadline.
            need: return once this many have replied; the requests still open
                are then cancelled (withdrawn where no responder has them yet).
            type: decode reply bodies to this type.
            task: the routing task; default each recipient cue's task.
            thread: conversation id. headers: free string metadata.

        Returns:
            `GatherResult`: `.replies` (address -> body) and `.receipts`
            (address -> `Receipt`: replied, error, no_responder,
            dead_responder, slow_responder or cancelled).

        Raises:
            ValueError: no recipients, one listed twice, or `need` out of range.
        """
        return self._drive(
            self._core.gather(
                to,
                msg,
                timeout=timeout,
                need=need,
                type=type,
                task=task,
                thread=thread,
                headers=headers,
            )
        )


class AsyncDurableMethods:
    """`AsyncMailbox`'s tickets and gather."""

    _core: MailboxCore

    if TYPE_CHECKING:

        async def _drive(
            self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
        ) -> R: ...

        def _running(self) -> TaskGroup: ...

    async def submit(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_SUBMIT_TIMEOUT,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Ticket:
        """Send a request and return at once with its `Ticket`; collect the reply later.

        The ticket outlives this process: any process that opens this mailbox
        can `collect` it (`str(ticket)` / `Ticket.parse` to keep it anywhere).

        Args:
            to_cue: the responder's address.
            msg: the request body.
            timeout: seconds until the request (and its reply) expire.
            task: the routing task; default the responder cue's task.
            thread: conversation id. headers: free string metadata.

        Returns:
            The `Ticket`.

        Raises:
            NotFound: no cue `to_cue`. EnvelopeError: the body cannot be encoded.
        """
        return await self._drive(
            self._core.submit(
                to_cue, msg, timeout=timeout, task=task, thread=thread, headers=headers
            )
        )

    async def collect(self, ticket: Ticket, *, wait: float | None = None, type: Any = None) -> Any:
        """The reply to `ticket`, collected exactly once (from any process of this mailbox).

        Args:
            ticket: what `submit` returned (or `Ticket.parse(text)`).
            wait: seconds to wait for the reply; None waits up to the deadline.
            type: decode the reply body to this type.

        Returns:
            The reply body.

        Raises:
            RemoteError: the responder's handler raised.
            RequestTimeout: the deadline passed with no reply collected (`.reason`).
            ReplyNotReady: `wait` ran out before the reply came; collect again later.
            AlreadyCollected: it was collected before (says when, and by which worker).
            MailboxError: the ticket belongs to another mailbox.
        """
        return await self._drive(self._core.collect(ticket, wait=wait, type=type))

    async def status(self, ticket: Ticket) -> TicketStatus:
        """Where `ticket`'s request is, read from the server; consumes nothing.

        Returns:
            A `TicketStatus`: `waiting`, `in_progress` (worker, attempts),
            `answered`, `collected`, `failed` or `expired`, with a detail.
        """
        return await self._drive(self._core.status(ticket))

    async def pending(self) -> list[Ticket]:
        """This mailbox's outstanding tickets, read from the server (soonest deadline first).

        Expired tickets and expired uncollected replies are settled first (`sweep`).
        """
        return await self._drive(self._core.pending())

    async def sweep(self) -> int:
        """Record as expired every ticket and uncollected reply of this mailbox past its
        deadline; answers how many were settled.
        """
        return await self._drive(self._core.sweep())

    async def gather(
        self,
        to: Sequence[str],
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        need: int | None = None,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> GatherResult:
        """Send `msg` as a request to each of `to`; return when all have answered, when
        `need` have replied, or at the deadline.

        Args:
            to: the recipients' addresses (each once).
            msg: the request body, the same for all.
            timeout: seconds to wait; also each request's deadline.
            need: return once this many have replied; the requests still open
                are then cancelled (withdrawn where no responder has them yet).
            type: decode reply bodies to this type.
            task: the routing task; default each recipient cue's task.
            thread: conversation id. headers: free string metadata.

        Returns:
            `GatherResult`: `.replies` (address -> body) and `.receipts`
            (address -> `Receipt`: replied, error, no_responder,
            dead_responder, slow_responder or cancelled).

        Raises:
            ValueError: no recipients, one listed twice, or `need` out of range.

        Async: needs the mailbox entered (its replies come on the reply stream task).
        """
        self._running()
        return await self._drive(
            self._core.gather(
                to,
                msg,
                timeout=timeout,
                need=need,
                type=type,
                task=task,
                thread=thread,
                headers=headers,
            )
        )
