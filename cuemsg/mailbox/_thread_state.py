"""Per-thread state of a mailbox: the busy gate of `serve()` and the peers of each thread.

`ThreadGate` decides, with no I/O, what `serve(on_busy=...)` does with a
message whose thread already has a handler running: it keeps one queue of
claimed executions per busy thread (arrival order), the message being
handled, and the notes each message's outcome will carry. `ThreadPeers`
remembers which cues this process sent a thread's messages to, so that
`history()` finds them before any answer came back. Both are guarded by a
lock: sync handlers run in pool threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Literal

from cuemsg.cueapi.models import Claimed
from cuemsg.envelope import NAMESPACE
from cuemsg.mailbox._records import Delivery

#: What `serve()` does with a message whose thread has a handler running.
BusyPolicy = Literal["queue", "reject", "interrupt"]
BUSY_POLICIES: tuple[BusyPolicy, ...] = ("queue", "reject", "interrupt")
#: Threads whose peers are remembered (the oldest are forgotten first).
PEER_THREADS = 1000


def thread_of(payload: dict[str, Any] | None) -> str | None:
    """The thread a claimed payload belongs to (None: none, or not a cuemsg envelope)."""
    meta = (payload or {}).get(NAMESPACE)
    thread = meta.get("thread") if isinstance(meta, dict) else None
    return thread if isinstance(thread, str) else None


def message_id_of(claimed: Claimed) -> str:
    """The message id a claimed payload carries (its execution when it has none)."""
    meta = (claimed.payload or {}).get(NAMESPACE)
    mid = meta.get("id") if isinstance(meta, dict) else None
    return mid if isinstance(mid, str) else f"exec:{claimed.execution_id}"


class _Busy:
    """One thread with a handler running: who runs, who waits, whether it was interrupted."""

    def __init__(self) -> None:
        self.waiting: deque[Claimed] = deque()
        self.running: Delivery[Any] | None = None
        self.interrupted_by: str | None = None  # set before `running` was known


class ThreadGate:
    """Which threads have a handler running in `serve()`, and the messages waiting for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, _Busy] = {}
        self._notes: dict[str, dict[str, str]] = {}  # execution id -> notes for its outcome

    def enter(self, thread: str, claimed: Claimed, *, wait: bool) -> bool:
        """True: `thread` was idle and is now busy with `claimed` (run it now).

        False: a handler of `thread` runs; with `wait` the execution was put
        in the thread's queue (it runs when those before it are done).
        """
        with self._lock:
            busy = self._busy.get(thread)
            if busy is None:
                self._busy[thread] = _Busy()
                return True
            if wait:
                busy.waiting.append(claimed)
                behind = busy.running.id if busy.running is not None else "an earlier message"
                self._notes[claimed.execution_id] = {"busy": "queued", "queued_behind": behind}
            return False

    def interrupt(self, thread: str, by: Claimed) -> None:
        """Set the `cancelled` event of `thread`'s running message (newer message: `by`)."""
        with self._lock:
            busy = self._busy.get(thread)
            if busy is None:
                return
            newer = message_id_of(by)
            self._notes[by.execution_id] = {"busy": "queued_after_interrupt"}
            if busy.running is None:
                busy.interrupted_by = newer  # applied once it starts
                return
            busy.running.notes.update(busy="interrupted", interrupted_by=newer)
            busy.running.cancelled.set()

    def started(self, msg: Delivery[Any]) -> None:
        """`msg` (of a thread `enter` let in) is about to reach its handler."""
        with self._lock:
            msg.notes.update(self._notes.pop(msg.execution_id, {}))
            busy = self._busy.get(msg.thread or "")
            if busy is None:
                return
            busy.running = msg
            if busy.interrupted_by not in (None, msg.id):  # not by itself (a close race)
                msg.notes.update(busy="interrupted", interrupted_by=str(busy.interrupted_by))
                busy.interrupted_by = None
                msg.cancelled.set()

    def forget(self, execution_id: str) -> None:
        """Drop the notes of an execution settled without its handler."""
        with self._lock:
            self._notes.pop(execution_id, None)

    def next(self, thread: str) -> Claimed | None:
        """The next execution waiting for `thread`, or None (the thread is idle again)."""
        with self._lock:
            busy = self._busy[thread]
            busy.running = None
            busy.interrupted_by = None
            if busy.waiting:
                return busy.waiting.popleft()
            del self._busy[thread]
            return None

    def abandon(self, thread: str) -> list[Claimed]:
        """Make `thread` idle at once; answers the executions that were waiting for it."""
        with self._lock:
            busy = self._busy.pop(thread, None)
            left = list(busy.waiting) if busy is not None else []
            for claimed in left:
                self._notes.pop(claimed.execution_id, None)
            return left


class ThreadPeers:
    """The cues this process sent each thread's messages to (for `history`)."""

    def __init__(self, size: int = PEER_THREADS) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._peers: OrderedDict[str, set[str]] = OrderedDict()

    def add(self, thread: str, cue_id: str) -> None:
        with self._lock:
            self._peers.setdefault(thread, set()).add(cue_id)
            self._peers.move_to_end(thread)
            while len(self._peers) > self._size:
                self._peers.popitem(last=False)

    def of(self, thread: str) -> set[str]:
        with self._lock:
            return set(self._peers.get(thread, ()))
