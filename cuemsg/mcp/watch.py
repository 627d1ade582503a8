"""Telling listening clients that the inbox changed while the agent was not reading it.

MCP 2026-07-28 clients open a `subscriptions/listen` stream and name the
resources they follow; SDK 2 fans server events out to those streams
through a `SubscriptionBus`, which a server may publish on outside any
request. `InboxWatch` is that bus for one mailbox: while a client
listens and no `check_inbox` is running, it counts the waiting messages
every `WATCH_EVERY` seconds and publishes `ResourceUpdated` for
`mailbox://NAME/inbox` when the count rises (for a first listener, when
mail is waiting at all), so the client can prompt its LLM to call
`check_inbox`. Counting claims nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import anyio
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent

from cuemsg import CuemsgError

__all__ = ["WATCH_EVERY", "InboxWatch"]

log = logging.getLogger("cuemsg.mcp")

#: Seconds between two counts of the waiting messages while a client listens.
WATCH_EVERY = 1.0


class InboxWatch(InMemorySubscriptionBus):
    """The server's subscription bus, which also watches one inbox for its listeners.

    Args:
        uri: the inbox resource (`mailbox://NAME/inbox`).
        interval: seconds between two counts.
    """

    def __init__(self, uri: str, *, interval: float = WATCH_EVERY) -> None:
        super().__init__()
        self.uri = uri
        self.interval = interval
        self._listeners_now = 0
        self._reading = 0  # check_inbox calls running
        self._listening = anyio.Event()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register a listen stream (the SDK calls this); counting runs while one is open."""
        unsubscribe = super().subscribe(listener)
        self._listeners_now += 1
        self._listening.set()
        done = False

        def forget() -> None:
            nonlocal done
            if not done:
                done = True
                self._listeners_now -= 1
                unsubscribe()

        return forget

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Mark a `check_inbox` call: no notice while the agent reads its inbox."""
        self._reading += 1
        try:
            yield
        finally:
            self._reading -= 1

    async def watch_forever(self, count: Callable[[], Awaitable[int]]) -> None:
        """Count with `count()` and publish when the waiting count rises (run it as a task)."""
        last = 0
        while True:
            if self._listeners_now == 0:
                self._listening = anyio.Event()
                await self._listening.wait()
                last = 0  # a first listener hears at once of mail already waiting
            try:
                waiting = await count()
            except CuemsgError as exc:  # the service is away: try again next turn
                log.warning("could not count the waiting messages: %s", exc)
            else:
                if self._reading:
                    last = 0  # what still waits after this read is news again
                else:
                    if waiting > last:
                        await self.publish(ResourceUpdated(uri=self.uri))
                    last = waiting
            await anyio.sleep(self.interval)
