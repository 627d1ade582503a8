"""The sending methods of `Mailbox` and `AsyncMailbox`: send, send_many, request.

Each drives one flow of the core (`_send`, `_request`); they sit in twin
mixins, side by side, so the mailboxes' own modules hold only their
construction, drivers and loops, and `tests/mailbox/test_twins.py` holds the
two surfaces equal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

from cuemsg.mailbox._config import DEFAULT_REQUEST_TIMEOUT
from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox._records import Sent

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

T = TypeVar("T")
R = TypeVar("R")


class SendMethods:
    """`Mailbox`'s sending methods (send, send_many, request)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # Mailbox's own driver

        def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R: ...

    def send(
        self,
        to_cue: str,
        msg: Any,
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Sent:
        """Send `msg` to the mailbox (or any worker cue) `to_cue`.

        Args:
            to_cue: the recipient: a mailbox name or an address (cue id); a
                name is looked up once per mailbox.
            msg: the body: any JSON value, a pydantic model or a msgspec Struct.
            task: the routing task; default the recipient cue's own task.
            send_at: deliver no sooner than this (`datetime` or UNIX seconds).
            ttl: seconds (from `send_at`, else now) after which receivers skip it.
            thread: a conversation id that replies carry over.
            headers: free string metadata.

        Returns:
            `Sent(id, execution_id, ...)`: the message id and its execution.

        Raises:
            MailboxNotFound: no mailbox is named `to_cue` (`.near`: close names).
            NotFound: no cue at the address `to_cue`. EnvelopeError: the body
            cannot be encoded, or is over the size limit.
        """
        return self._drive(
            self._core.send(
                to_cue, msg, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    def send_many(
        self,
        to_cue: str,
        msgs: Sequence[Any],
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Sent]:
        """Send many messages to `to_cue` (a name or an address) in order, batched when
        the server allows it."""
        return self._drive(
            self._core.send_many(
                to_cue, msgs, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    @overload
    def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: None = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any: ...
    @overload
    def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: type[T],
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> T: ...
    def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any:
        """Send a request to `to_cue` and wait for its reply (many may wait at once).

        Args:
            to_cue: the responder: a mailbox name or an address (cue id).
            msg: the request body.
            timeout: seconds to wait; also the request's deadline, after which
                a responder skips it (and records it as expired).
            type: decode the reply body to this type.
            task: the routing task; default the responder cue's task.
            thread: conversation id. headers: free string metadata.
            require_responder: first check that a worker serving the task was
                seen lately; raise `NoResponder` at once if not.

        Returns:
            The reply body.

        Raises:
            RequestTimeout: no reply in time; `.reason` is `no_responder`,
                `dead_responder` or `slow_responder`.
            RemoteError: the responder's handler raised (`.type`, `.message`).
            NoReply: the responder acked or rejected it without a reply
                (`.worker_id`, `.settled`, `.reason`); raised as soon as it does.
            NoResponder: `require_responder=True` and nobody serves the task.
            MailboxNotFound: no mailbox is named `to_cue`. NotFound: no cue at
                the address `to_cue`.
        """
        return self._drive(
            self._core.request(
                to_cue,
                msg,
                timeout=timeout,
                type=type,
                task=task,
                thread=thread,
                headers=headers,
                require_responder=require_responder,
            )
        )


class AsyncSendMethods:
    """`AsyncMailbox`'s sending methods (send, send_many, request)."""

    _core: MailboxCore

    if TYPE_CHECKING:  # AsyncMailbox's own driver

        async def _drive(
            self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
        ) -> R: ...

        def _running(self) -> TaskGroup: ...

    async def send(
        self,
        to_cue: str,
        msg: Any,
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Sent:
        """Send `msg` to the mailbox (or any worker cue) `to_cue`.

        Args:
            to_cue: the recipient: a mailbox name or an address (cue id); a
                name is looked up once per mailbox.
            msg: the body: any JSON value, a pydantic model or a msgspec Struct.
            task: the routing task; default the recipient cue's own task.
            send_at: deliver no sooner than this (`datetime` or UNIX seconds).
            ttl: seconds (from `send_at`, else now) after which receivers skip it.
            thread: a conversation id that replies carry over.
            headers: free string metadata.

        Returns:
            `Sent(id, execution_id, ...)`: the message id and its execution.

        Raises:
            MailboxNotFound: no mailbox is named `to_cue` (`.near`: close names).
            NotFound: no cue at the address `to_cue`. EnvelopeError: the body
            cannot be encoded, or is over the size limit.
        """
        return await self._drive(
            self._core.send(
                to_cue, msg, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    async def send_many(
        self,
        to_cue: str,
        msgs: Sequence[Any],
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Sent]:
        """Send many messages to `to_cue` (a name or an address) in order, batched when
        the server allows it."""
        return await self._drive(
            self._core.send_many(
                to_cue, msgs, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    @overload
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: None = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any: ...
    @overload
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: type[T],
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> T: ...
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any:
        """Send a request to `to_cue` and wait for its reply (many may wait at once).

        Args:
            to_cue: the responder: a mailbox name or an address (cue id).
            msg: the request body.
            timeout: seconds to wait; also the request's deadline, after which
                a responder skips it (and records it as expired).
            type: decode the reply body to this type.
            task: the routing task; default the responder cue's task.
            thread: conversation id. headers: free string metadata.
            require_responder: first check that a worker serving the task was
                seen lately; raise `NoResponder` at once if not.

        Returns:
            The reply body.

        Raises:
            RequestTimeout: no reply in time; `.reason` is `no_responder`,
                `dead_responder` or `slow_responder`.
            RemoteError: the responder's handler raised (`.type`, `.message`).
            NoReply: the responder acked or rejected it without a reply
                (`.worker_id`, `.settled`, `.reason`); raised as soon as it does.
            NoResponder: `require_responder=True` and nobody serves the task.
            MailboxNotFound: no mailbox is named `to_cue`. NotFound: no cue at
                the address `to_cue`.
        """
        self._running()
        return await self._drive(
            self._core.request(
                to_cue,
                msg,
                timeout=timeout,
                type=type,
                task=task,
                thread=thread,
                headers=headers,
                require_responder=require_responder,
            )
        )
