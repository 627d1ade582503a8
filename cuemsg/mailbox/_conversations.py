"""The thread and topic methods of `Mailbox` and `AsyncMailbox` (history, publish/subscribe).

Each is one line that drives a flow of the core (`_threads`, `_topics`);
they sit in twin mixins, side by side, so the mailboxes' own modules stay
small and `tests/mailbox/test_twins.py` holds the two surfaces equal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._ops import Flow, Op
from cuemsg.mailbox._records import Sent
from cuemsg.mailbox._threads import HISTORY_SCAN, ThreadEntry
from cuemsg.mailbox._topics import Subscription

R = TypeVar("R")


class ConversationMethods:
    """`Mailbox`'s thread and topic methods."""

    _core: MailboxCore

    if TYPE_CHECKING:  # Mailbox's own driver

        def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R: ...

    def history(
        self, thread: str, *, limit: int = 50, peers: Sequence[str] = (), scan: int = HISTORY_SCAN
    ) -> list[ThreadEntry]:
        """The last `limit` messages of `thread`, both directions, oldest first.

        Built from the server's executions: this mailbox's cue (what came in,
        replies included), and the cues of those who wrote in the thread,
        that this process sent it to, and `peers` (what went out). Each
        entry carries its record: status, who claimed it, attempts, outcome,
        the reply it was answered with.

        Args:
            thread: the conversation id.
            limit: how many messages, the newest.
            peers: more cues to look for messages this mailbox sent in the thread.
            scan: at most this many executions read per cue, newest first.

        Raises:
            ValueError: an empty thread, or a limit or scan below 1.
        """
        return self._drive(self._core.history(thread, limit=limit, peers=peers, scan=scan))

    def subscribe(self, pattern: str) -> Subscription:
        """Subscribe this mailbox to a topic pattern; kept on the server (survives restarts).

        Args:
            pattern: dotted tokens; `*` matches one token, `>` (last) the rest.

        Returns:
            The `Subscription` (subscribing twice to a pattern is one subscription).

        Raises:
            ValueError: the pattern is not valid (the message says why).
        """
        return self._drive(self._core.subscribe(pattern))

    def unsubscribe(self, pattern: str) -> bool:
        """End this mailbox's subscription to `pattern`; False when there was none."""
        return self._drive(self._core.unsubscribe(pattern))

    def subscriptions(self) -> list[Subscription]:
        """This mailbox's subscriptions, as the server keeps them."""
        return self._drive(self._core.subscriptions())

    def publish(
        self,
        topic: str,
        msg: Any,
        *,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Sent]:
        """Send one copy of `msg` to every mailbox subscribed to a pattern matching `topic`.

        Each copy is its own message, with its own execution, ack and record,
        and carries `topic` (`msg.topic` on receipt). One `fire.batch` where
        the server has it.

        Returns:
            One `Sent` per subscribed mailbox; an empty list (logged) when none is.

        Raises:
            ValueError: the topic is not valid (e.g. it holds a wildcard).
            EnvelopeError: the body cannot be encoded, or is over the size limit.
        """
        return self._drive(self._core.publish(topic, msg, ttl=ttl, thread=thread, headers=headers))


class AsyncConversationMethods:
    """`AsyncMailbox`'s thread and topic methods."""

    _core: MailboxCore

    if TYPE_CHECKING:  # AsyncMailbox's own driver

        async def _drive(
            self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
        ) -> R: ...

    async def history(
        self, thread: str, *, limit: int = 50, peers: Sequence[str] = (), scan: int = HISTORY_SCAN
    ) -> list[ThreadEntry]:
        """The last `limit` messages of `thread`, both directions, oldest first.

        Built from the server's executions: this mailbox's cue (what came in,
        replies included), and the cues of those who wrote in the thread,
        that this process sent it to, and `peers` (what went out). Each
        entry carries its record: status, who claimed it, attempts, outcome,
        the reply it was answered with.

        Args:
            thread: the conversation id.
            limit: how many messages, the newest.
            peers: more cues to look for messages this mailbox sent in the thread.
            scan: at most this many executions read per cue, newest first.

        Raises:
            ValueError: an empty thread, or a limit or scan below 1.
        """
        return await self._drive(self._core.history(thread, limit=limit, peers=peers, scan=scan))

    async def subscribe(self, pattern: str) -> Subscription:
        """Subscribe this mailbox to a topic pattern; kept on the server (survives restarts).

        Args:
            pattern: dotted tokens; `*` matches one token, `>` (last) the rest.

        Returns:
            The `Subscription` (subscribing twice to a pattern is one subscription).

        Raises:
            ValueError: the pattern is not valid (the message says why).
        """
        return await self._drive(self._core.subscribe(pattern))

    async def unsubscribe(self, pattern: str) -> bool:
        """End this mailbox's subscription to `pattern`; False when there was none."""
        return await self._drive(self._core.unsubscribe(pattern))

    async def subscriptions(self) -> list[Subscription]:
        """This mailbox's subscriptions, as the server keeps them."""
        return await self._drive(self._core.subscriptions())

    async def publish(
        self,
        topic: str,
        msg: Any,
        *,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Sent]:
        """Send one copy of `msg` to every mailbox subscribed to a pattern matching `topic`.

        Each copy is its own message, with its own execution, ack and record,
        and carries `topic` (`msg.topic` on receipt). One `fire.batch` where
        the server has it.

        Returns:
            One `Sent` per subscribed mailbox; an empty list (logged) when none is.

        Raises:
            ValueError: the topic is not valid (e.g. it holds a wildcard).
            EnvelopeError: the body cannot be encoded, or is over the size limit.
        """
        return await self._drive(
            self._core.publish(topic, msg, ttl=ttl, thread=thread, headers=headers)
        )
