"""Handler slots of `serve()`: how many handlers may start, and waiting for one to end.

`ThreadSlots` serves `Mailbox` (handlers in a thread pool), `TaskSlots`
serves `AsyncMailbox` (handlers as tasks of one event loop).
"""

from __future__ import annotations

import threading

import anyio


class ThreadSlots:
    """Handler slots of `Mailbox.serve()`: how many are free, and waiting for them (threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._cond = threading.Condition()

    def wait_free(self) -> int:
        with self._cond:
            while self.busy >= self.size:
                self._cond.wait()
            return self.size - self.busy

    def take(self) -> None:
        with self._cond:
            self.busy += 1

    def give(self, _: object = None) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify_all()

    def drain(self) -> None:
        with self._cond:
            while self.busy:
                self._cond.wait()


class TaskSlots:
    """Handler slots of `AsyncMailbox.serve()`: the same, for tasks of one event loop."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._freed = anyio.Event()

    async def wait_free(self) -> int:
        while self.busy >= self.size:
            await self._freed.wait()
            self._freed = anyio.Event()
        return self.size - self.busy

    def give(self) -> None:
        self.busy -= 1
        self._freed.set()

    async def drain(self) -> None:
        while self.busy:
            await self._freed.wait()
            self._freed = anyio.Event()
