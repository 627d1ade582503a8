"""Thread flows: a thread's history, and the busy policy of `serve()` per thread.

A thread is a conversation: `send(..., thread=)` / `request(..., thread=)`
start it, replies carry it on. `history()` rebuilds it from the server's
executions (plain contract: list the executions of the cues involved and
keep those of the thread), each message with its record. `dispatch()` is
how `serve()` hands a claimed message to a handler when its thread may
already have one running (`ThreadGate` holds that state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec

from cuemsg._exceptions import EnvelopeError
from cuemsg.cueapi.models import Claimed, Execution, ExecutionList
from cuemsg.envelope import Kind, decode_payload, outcome_meta_of
from cuemsg.mailbox._ops import Flow, HoldSlot, ListExecutions, ReleaseSlot, Spawn
from cuemsg.mailbox._receive import ReceiveFlows
from cuemsg.mailbox._thread_state import BusyPolicy, thread_of

log = logging.getLogger("cuemsg.mailbox")

#: Executions asked for per page when `history()` lists a cue.
HISTORY_PAGE = 100
#: Default bound on the executions `history()` reads per cue (newest first).
HISTORY_SCAN = 500


class ThreadEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a thread, with its record (`Mailbox.history`).

    Attributes:
        id: the message id.
        direction: `"in"` (sent to this mailbox) or `"out"` (sent by it).
        kind: `message`, `request`, `reply` or `error`.
        sender: the sending mailbox's address.
        sender_name: its name (None in envelopes older than names).
        cue_id: the cue it was sent to.
        body: the body as JSON builtins.
        sent_at: when the sender made it.
        topic: the topic it was published on, if any.
        correlation_id: request/reply pairing.
        execution_id: the execution that carries it (the latest one, after retries).
        status: that execution's state (`pending`, `delivering`, `success`, `failed`...).
        claimed_by: the worker that claimed it last.
        attempts: claims of that execution.
        outcome: what its outcome says cuemsg did (`acked`, `replied`,
            `rejected`, `expired`...), None while it has none.
        outcome_text: the outcome's result or error text.
        reply_execution_id: the execution of the reply it was answered with.
        attempt: 1, +1 per retry-later re-fire (the entry shows the latest).
    """

    id: str
    direction: Literal["in", "out"]
    kind: Kind
    sender: str | None
    sender_name: str | None = None
    cue_id: str
    body: Any
    sent_at: datetime | None
    topic: str | None = None
    correlation_id: str | None = None
    execution_id: str
    status: str
    claimed_by: str | None = None
    attempts: int = 0
    outcome: str | None = None
    outcome_text: str | None = None
    reply_execution_id: str | None = None
    attempt: int = 1


class ThreadFlows(ReceiveFlows):
    """Threads: their history, and one handler at a time per thread in `serve()`."""

    # -- the busy policy -------------------------------------------------------------------

    def dispatch(
        self, claimed: Claimed, run: Callable[[Claimed], Flow[None]], on_busy: BusyPolicy
    ) -> Flow[None]:
        """Hand `claimed` to a handler slot by its thread's state and `on_busy`.

        A message with no thread, or whose thread is idle, runs at once. One
        whose thread is busy waits in that thread's queue (`queue`; with
        `interrupt` the running handler's `cancelled` event is set first),
        holding a slot meanwhile so claims stay bounded by `concurrency`, or
        is turned away (`reject`).
        """
        thread = thread_of(claimed.payload)
        if thread is None:
            yield Spawn(run(claimed))
            return
        if self.threads.enter(thread, claimed, wait=on_busy != "reject"):
            yield Spawn(self._thread_turns(thread, claimed, run))
            return
        if on_busy == "reject":
            yield Spawn(self._turn_away(claimed, thread))
            return
        yield HoldSlot()
        if on_busy == "interrupt":
            self.threads.interrupt(thread, claimed)

    def _thread_turns(
        self, thread: str, first: Claimed, run: Callable[[Claimed], Flow[None]]
    ) -> Flow[None]:
        """Handle `first`, then each message that queued for `thread` meanwhile, in order."""
        current = first
        try:
            while True:
                yield from run(current)
                self.threads.forget(current.execution_id)
                following = self.threads.next(thread)
                if following is None:
                    return
                yield ReleaseSlot()  # the slot `current` held; `following` holds its own
                current = following
        except Exception:
            # Not expected (handle() settles what it can); free the thread so serving goes
            # on: the messages left waiting are let go and, their leases lapsing, come back.
            for left in self.threads.abandon(thread):
                self.leases.release(left.execution_id)
                yield ReleaseSlot()
            raise

    def _turn_away(self, claimed: Claimed, thread: str) -> Flow[None]:
        """`on_busy="reject"`: settle the message as busy without its handler."""
        try:
            msg = yield from self.admit(claimed)
            if msg is None:
                return
            msg.notes.update(busy="rejected")
            reason = f"busy: a handler of thread {thread!r} is still running"
            log.info("turned away message %s: %s", msg.id, reason)
            if msg.is_request and msg.reply_cue_id:
                yield from self._quiet(self.reply_error(msg, "busy", reason))
            else:
                yield from self._quiet(self.reject(msg, reason))
        finally:
            self.leases.release(claimed.execution_id)

    # -- history ---------------------------------------------------------------------------

    def history(
        self, thread: str, *, limit: int, peers: Iterable[str] = (), scan: int = HISTORY_SCAN
    ) -> Flow[list[ThreadEntry]]:
        """The last `limit` messages of `thread`, both directions, oldest first.

        Reads this mailbox's cue (what came in, replies included), then the
        cues of those who wrote in the thread, those this process sent it
        to, and `peers` (what went out). Each cue costs at most
        `scan / HISTORY_PAGE` requests; a cue stops being read once it gave
        `limit` messages of the thread (older ones cannot be in the answer).
        """
        if not thread:
            raise ValueError("history() needs a thread id, not an empty string")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        if scan < 1:
            raise ValueError(f"scan must be >= 1, not {scan}")
        me = self.info.address
        cues = [me]
        for cue in [*sorted(self.thread_peers.of(thread)), *peers]:
            if cue not in cues:
                cues.append(cue)
        found: dict[str, ThreadEntry] = {}
        i = 0
        while i < len(cues):
            cue = cues[i]
            i += 1
            for entry in (yield from self._thread_on(cue, thread, limit, scan)):
                if entry.direction == "in" and entry.sender and entry.sender not in cues:
                    cues.append(entry.sender)  # what we sent them is on their cue
                kept = found.get(entry.id)
                if kept is None or entry.attempt > kept.attempt:
                    found[entry.id] = entry
        ordered = sorted(found.values(), key=_order)
        return ordered[-limit:]

    def _thread_on(self, cue: str, thread: str, limit: int, scan: int) -> Flow[list[ThreadEntry]]:
        """The messages of `thread` on `cue` that concern this mailbox (newest first)."""
        entries: list[ThreadEntry] = []
        offset = 0
        while offset < scan:
            page: ExecutionList = yield ListExecutions(
                cue, None, offset=offset, limit=min(HISTORY_PAGE, scan - offset)
            )
            for execution in page.executions:
                entry = self._entry(cue, execution, thread)
                if entry is not None:
                    entries.append(entry)
            offset += len(page.executions)
            if not page.executions or offset >= page.total or len(entries) >= limit:
                break
        return entries

    def _entry(self, cue: str, execution: Execution, thread: str) -> ThreadEntry | None:
        if thread_of(execution.payload) != thread:
            return None
        try:
            env = decode_payload(execution.payload)
        except EnvelopeError:
            return None
        meta = env.meta
        if meta is None:
            return None
        me = self.info.address
        if cue != me and meta.sender != me:
            return None  # between others, on a peer's cue
        outcome = execution.outcome or {}
        recorded = outcome_meta_of(outcome)
        text = outcome.get("result") or outcome.get("error")
        state = recorded.get("state")
        reply = recorded.get("reply_execution_id")
        return ThreadEntry(
            id=meta.id,
            direction="in" if cue == me else "out",
            kind=meta.kind,
            sender=meta.sender,
            sender_name=meta.sender_name,
            cue_id=cue,
            body=env.message,
            sent_at=meta.sent_at,
            topic=meta.topic,
            correlation_id=meta.correlation_id,
            execution_id=execution.id,
            status=execution.status,
            claimed_by=execution.claimed_by_worker,
            attempts=execution.attempts,
            outcome=state if isinstance(state, str) else None,
            outcome_text=text if isinstance(text, str) else None,
            reply_execution_id=reply if isinstance(reply, str) else None,
            attempt=meta.attempt,
        )


def _order(entry: ThreadEntry) -> tuple[float, str]:
    """Sort key: when it was sent (ids break ties; they sort by creation time)."""
    return (entry.sent_at.timestamp() if entry.sent_at else float("inf"), entry.id)
