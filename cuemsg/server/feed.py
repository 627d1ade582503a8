"""The event feed's logic with no I/O: the events an execution's stamps stand
for, their JSON and SSE framing, and `FeedSignal`, which wakes open streams
when something may have changed.

An execution read by the feed (`FeedRow`) carries one stamp per kind of
change (storage/feed.py); `events_of` turns the stamps in (after, upto] into
events, oldest first. Its envelope (message id, kind, sender, thread) is
read with `cuemsg.envelope.meta_of` (leniently: the feed shows what it can).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Any, cast

import msgspec

from cuemsg.envelope import NAMESPACE, meta_of
from cuemsg.server.storage.base import OutcomeRecord
from cuemsg.server.storage.feed import FeedRow
from cuemsg.server.wire import iso

#: The event types, in the order one hand-off goes through them.
EVENT_TYPES = ("fired", "claimed", "heartbeat_lost", "outcome", "expired", "redriven")


class _Outer(msgspec.Struct):
    """A payload read for its envelope only: the body and the rest are skipped, unparsed."""

    cuemsg: Any = None  # envelope.NAMESPACE


_decode_outer = msgspec.json.Decoder(_Outer).decode
_decode_outcome = msgspec.json.Decoder(OutcomeRecord).decode
_encode = msgspec.json.Encoder().encode
_replace = msgspec.structs.replace

#: Times `_at` renders itself (others go to `wire.iso`, which clamps): from
#: 1970 to 3058, whole seconds under 2**35.
_FAST_AT = float(2**35)


@functools.lru_cache(maxsize=64)
def _second(whole: int) -> str:
    """`wire.iso` of a whole second: `YYYY-MM-DDTHH:MM:SS+00:00`."""
    return cast(str, iso(float(whole)))


def _at(ts: float | None) -> str | None:
    """`wire.iso(ts)`, the same text, at a fraction of its cost: a busy feed
    renders a few times a second's worth of events in the same second, so the
    date and time of day are rendered once a second, the microseconds each time.

    The microseconds are rounded as `timedelta(seconds=ts)` rounds them (half
    to even, of the float fraction times 10**6); tests/server/test_feed_frames.py
    holds the two equal.
    """
    if ts is None or not (0.0 <= ts < _FAST_AT):  # NaN fails both tests: iso clamps it
        return iso(ts)
    whole = int(ts)
    micro = round((ts - whole) * 1e6)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    text = _second(whole)
    return text if micro == 0 else f"{text[:19]}.{micro:06d}+00:00"


class Event(msgspec.Struct, kw_only=True):
    """One event of the feed; its JSON is the SSE `data` (docs/cueapi.md)."""

    seq: int
    type: str
    at: str | None
    execution_id: str
    cue_id: str
    cue_name: str | None
    task: str | None
    message_id: str | None
    kind: str | None
    sender: str | None
    thread: str | None
    worker_id: str | None = None
    attempt: int | None = None
    status: str
    success: bool | None = None
    result: str | None = None
    error: str | None = None
    redrive_of: str | None = None
    redriven_to: str | None = None


class _Envelope(msgspec.Struct):
    message_id: str | None = None
    kind: str | None = None
    sender: str | None = None
    thread: str | None = None


def _envelope(row: FeedRow) -> _Envelope:
    try:
        meta = meta_of({NAMESPACE: _decode_outer(row.payload).cuemsg})
    except msgspec.DecodeError:  # not JSON we can read: no message fields
        return _Envelope()
    if meta is None:  # a foreign payload
        return _Envelope()

    def text(key: str) -> str | None:
        value = meta.get(key)
        return value if isinstance(value, str) else None

    return _Envelope(text("id"), text("kind") or "message", text("sender"), text("thread"))


def events_of(rows: Iterable[FeedRow], *, after: int, upto: int, thread: str | None) -> list[Event]:
    """The events stamped in (after, upto] on `rows`, oldest first; with `thread`,
    only those of messages in that thread."""
    out: list[Event] = []
    for row in rows:
        env = _envelope(row)
        if thread is not None and env.thread != thread:
            continue
        out.extend(_row_events(row, env, after, upto))
    out.sort(key=lambda e: e.seq)
    return out


def _row_events(row: FeedRow, env: _Envelope, after: int, upto: int) -> list[Event]:
    """The row's events stamped in (after, upto]; those outside are not rendered
    (a row changed again is read again, with the stamps already sent)."""
    # The fields every event of the row shares are set once; each event is a copy
    # with its own (msgspec's replace: far cheaper than building each anew).
    base = Event(
        seq=0,
        type="",
        at=None,
        execution_id=row.id,
        cue_id=row.cue_id,
        cue_name=row.cue_name,
        task=row.task,
        message_id=env.message_id,
        kind=env.kind,
        sender=env.sender,
        thread=env.thread,
        status="",
    )
    out: list[Event] = []

    def event(seq: int, type: str, at: float | None, status: str, **extra: Any) -> None:
        if after < seq <= upto:
            out.append(_replace(base, seq=seq, type=type, at=_at(at), status=status, **extra))

    lost = row.lost_seq or 0
    claimed = row.claimed_seq or 0
    # The attempt whose lease ran out (rows from before `lost_attempt` infer it; a
    # release gives its attempt back, so only the stored number is exact there).
    lost_n = row.lost_attempt
    if lost_n is None:
        lost_n = row.attempts - 1 if claimed > lost else row.attempts
    if row.fired_seq:
        event(row.fired_seq, "fired", row.created_at, "pending", redrive_of=row.redrive_of)
    if claimed:
        # The latest claim; if its lease ran out since, the claim fields were cleared
        # and what it was is kept with the loss.
        current = claimed > lost
        event(
            claimed,
            "claimed",
            row.claimed_at if current else row.lost_claimed_at,
            "delivering",
            worker_id=row.claimed_by_worker if current else row.lost_worker,
            attempt=row.attempts if current else lost_n,
        )
    if row.lost_claim_seq and claimed > lost:
        # Claimed again since its lease ran out: the claim that lost it, as it was.
        event(
            row.lost_claim_seq,
            "claimed",
            row.lost_claimed_at,
            "delivering",
            worker_id=row.lost_worker,
            attempt=lost_n,
        )
    if lost:
        # Past the claim cap the lost lease ends it: the outcome follows with no claim.
        capped = bool(row.done_seq) and claimed < lost and row.status == "failed"
        event(
            lost,
            "heartbeat_lost",
            row.lost_at,
            "failed" if capped else "pending",
            worker_id=row.lost_worker,
            attempt=lost_n,
        )
    if row.done_seq:
        if row.status == "missed":
            event(
                row.done_seq,
                "expired",
                row.updated_at,
                "missed",
                success=False,
                error="nobody claimed it within the unclaimed timeout",
            )
        elif row.outcome is not None and after < row.done_seq <= upto:
            outcome = _decode_outcome(row.outcome)
            event(
                row.done_seq,
                "outcome",
                outcome.recorded_at,
                "success" if outcome.success else "failed",
                worker_id=outcome.worker_id or row.claimed_by_worker or row.lost_worker,
                attempt=row.attempts,
                success=outcome.success,
                result=outcome.result,
                error=outcome.error,
            )
    if row.redriven_seq:
        event(
            row.redriven_seq,
            "redriven",
            row.updated_at,
            row.status,
            redriven_to=row.redriven_to,
        )
    return out


def sse(event: Event) -> bytes:
    """One event framed for `text/event-stream`."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), _encode(event))


def sse_frames(events: list[Event]) -> bytes:
    """Events framed for `text/event-stream`, in one buffer (one write for a batch)."""
    return b"".join([sse(event) for event in events])


def sse_ready(seq: int) -> bytes:
    """The `ready` event: the backlog asked for has been sent, the stream is live."""
    return b'id: %d\nevent: ready\ndata: {"seq":%d}\n\n' % (seq, seq)


SSE_KEEPALIVE = b": keepalive\n\n"


class FeedSignal:
    """Wakes every open stream when something may have changed.

    `bump()` is called after each state-changing request, each sweep and each
    wake-up relayed from another replica; it costs nothing while no stream is
    open. A stream subscribes before it reads, so a change committed between
    its read and its wait still wakes it.
    """

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    @property
    def streams(self) -> int:
        return len(self._events)

    def bump(self) -> None:
        for event in self._events:
            event.set()
