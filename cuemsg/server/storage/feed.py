"""What the event feed reads from storage: the stamp columns every state
change writes on its execution, the row the feed selects, and the rule that
makes a bounded read exact.

There is no event table. Each statement that changes an execution's state
stamps it, in the same write, with the next number of one sequence shared by
the database (SQLite: a counter of the one connection; PostgreSQL: a sequence
read by a trigger), in a column per kind of change:

    fired_seq      the insert (a fire, a redrive)
    claimed_seq    the latest claim
    lost_seq       the latest lease that ran out (with the worker that lost it)
    lost_claim_seq the claim whose lease that was (kept when it is claimed again),
                   with its attempt number in `lost_attempt`
    done_seq       the outcome, or `missed` (the unclaimed timeout)
    redriven_seq   the dead letter was sent again (`redriven_to`)

`event_seq` is the greatest of them (a generated column, indexed with the
tenant), so "what changed after N" is one index range. An event is a stamp:
its id is the stamp's number.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: Columns the feed adds to `executions`, in this order (SQLite fills
#: `lost_seq` before `done_seq` when one statement sets both).
STAMP_COLUMNS = (
    ("fired_seq", "INTEGER"),
    ("claimed_seq", "INTEGER"),
    ("lost_seq", "INTEGER"),
    ("lost_worker", "TEXT"),
    ("lost_at", "REAL"),
    ("lost_claimed_at", "REAL"),
    ("done_seq", "INTEGER"),
    ("redriven_seq", "INTEGER"),
    ("redriven_to", "TEXT"),
    ("redrive_of", "TEXT"),
)
SEQ_NAMES = ("fired_seq", "claimed_seq", "lost_seq", "done_seq", "redriven_seq")

#: The columns a feed read selects (prefix `e.` for executions, `c.` for cues).
FEED_COLUMNS = (
    "e.id, e.cue_id, c.name, e.task, e.payload, e.status, e.attempts, e.claimed_by_worker, "
    "e.created_at, e.claimed_at, e.updated_at, e.outcome, e.fired_seq, e.claimed_seq, "
    "e.lost_seq, e.lost_worker, e.lost_at, e.lost_claimed_at, e.done_seq, e.redriven_seq, "
    "e.redriven_to, e.redrive_of, e.event_seq, e.lost_claim_seq, e.lost_attempt"
)


class FeedRow(msgspec.Struct, kw_only=True):
    """One execution as the feed reads it (payload and outcome still JSON text)."""

    id: str
    cue_id: str
    cue_name: str | None
    task: str | None
    payload: bytes
    status: str
    attempts: int
    claimed_by_worker: str | None
    created_at: float
    claimed_at: float | None
    updated_at: float
    outcome: bytes | None
    fired_seq: int | None
    claimed_seq: int | None
    lost_seq: int | None
    lost_worker: str | None
    lost_at: float | None
    lost_claimed_at: float | None
    done_seq: int | None
    redriven_seq: int | None
    redriven_to: str | None
    redrive_of: str | None
    event_seq: int
    lost_claim_seq: int | None = None
    lost_attempt: int | None = None


def _text(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def feed_row(row: tuple[Any, ...]) -> FeedRow:
    """A `FeedRow` from a row of `FEED_COLUMNS`."""
    return FeedRow(
        id=row[0],
        cue_id=row[1],
        cue_name=row[2],
        task=row[3],
        payload=_text(row[4]),
        status=row[5],
        attempts=row[6],
        claimed_by_worker=row[7],
        created_at=row[8],
        claimed_at=row[9],
        updated_at=row[10],
        outcome=None if row[11] is None else _text(row[11]),
        fired_seq=row[12],
        claimed_seq=row[13],
        lost_seq=row[14],
        lost_worker=row[15],
        lost_at=row[16],
        lost_claimed_at=row[17],
        done_seq=row[18],
        redriven_seq=row[19],
        redriven_to=row[20],
        redrive_of=row[21],
        event_seq=row[22] or 0,
        lost_claim_seq=row[23],
        lost_attempt=row[24],
    )


class FeedBatch(msgspec.Struct):
    """A feed read: every stamp in (after, upto] is on one of `rows`."""

    rows: list[FeedRow]
    upto: int


def feed_where(mark: str, tenant_id: str, cue_id: str | None) -> tuple[str, list[Any]]:
    """The tenant (and cue) condition of a feed read; `mark` is the placeholder."""
    if cue_id is None:
        return f"e.tenant_id = {mark}", [tenant_id]
    return f"e.tenant_id = {mark} AND e.cue_id = {mark}", [tenant_id, cue_id]


def bounded(rows: list[FeedRow], late: list[FeedRow], limit: int, head: int) -> FeedBatch:
    """Make a read exact.

    `rows` are the first `limit` executions changed after the cursor, by
    `event_seq`, and `head` a stamp such that every stamp up to it was
    committed before they were read. When there are fewer than `limit`, they
    hold every stamp up to `head` (a row changed since holds its older stamps
    still).
    When the read was cut at `limit`, stamps up to the last row's `event_seq`
    (M) may also sit on executions changed again since (their `event_seq` is
    past M): the caller read those as `late` (`event_seq > M AND fired_seq <= M`),
    and the batch ends at M (or `head`, if lower).
    """
    if len(rows) < limit:
        return FeedBatch(rows, head)
    upto = min(rows[-1].event_seq, head)
    seen = {r.id for r in rows}
    return FeedBatch(rows + [r for r in late if r.id not in seen], upto)
