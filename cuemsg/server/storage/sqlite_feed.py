"""The event feed, redrive and the waiting counts of the SQLite backend
(`SQLiteStorage` inherits them), apart from its message path.

The stamps come from `SQLiteStorage._next_stamp`, a counter of the one
connection, bound into SQL as `cuemsg_next_event()`: on one connection,
stamps are given in commit order, so a read sees every stamp up to the
counter's value.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import msgspec

from cuemsg.server.errors import cue_not_found, execution_not_found
from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    CueRow,
    ExecutionRow,
    execution_from_row,
    new_execution_id,
)
from cuemsg.server.storage.feed import FEED_COLUMNS, FeedBatch, bounded, feed_row, feed_where
from cuemsg.server.storage.redrive import check_redrivable, redrive_execution

_EXEC_COLS = EXECUTION_COLUMNS
_encode = msgspec.json.Encoder().encode
_decode_cue = msgspec.json.Decoder(CueRow).decode


class SQLiteFeed:
    """`event_head`, `read_events`, `redrive` and `waiting_by_cue` on SQLite."""

    _stamp: int
    notifier: Notifier

    if TYPE_CHECKING:  # provided by SQLiteStorage

        @property
        def db(self) -> sqlite3.Connection: ...

        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

    async def event_head(self) -> int:
        self.db  # noqa: B018 (raises when not open)
        return self._stamp

    async def read_events(
        self, tenant_id: str, after: int, *, cue_id: str | None, limit: int
    ) -> FeedBatch:
        # No await below: the reads see one state (one connection, one loop).
        where, args = feed_where("?", tenant_id, cue_id)
        select = f"SELECT {FEED_COLUMNS} FROM executions e LEFT JOIN cues c ON c.id = e.cue_id "
        rows = [
            feed_row(r)
            for r in self.db.execute(
                f"{select} WHERE {where} AND e.event_seq > ? ORDER BY e.event_seq LIMIT ?",
                [*args, after, limit],
            )
        ]
        late = []
        if len(rows) >= limit:
            cut = rows[-1].event_seq
            late = [
                feed_row(r)
                for r in self.db.execute(
                    f"{select} WHERE {where} AND e.event_seq > ? AND e.fired_seq <= ?",
                    [*args, cut, cut],
                )
            ]
        return bounded(rows, late, limit, self._stamp)

    async def redrive(
        self, tenant_id: str, execution_id: str, now: float
    ) -> tuple[ExecutionRow, bool]:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_EXEC_COLS} FROM executions WHERE id = ? AND tenant_id = ?",
                (execution_id, tenant_id),
            ).fetchone()
            if row is None:
                raise execution_not_found(execution_id)
            dead = execution_from_row(row)
            if dead.redriven_to is not None:
                again = db.execute(
                    f"SELECT {_EXEC_COLS} FROM executions WHERE id = ?", (dead.redriven_to,)
                ).fetchone()
                if again is not None:
                    return execution_from_row(again), False
            check_redrivable(dead)
            doc = db.execute(
                "SELECT doc FROM cues WHERE id = ? AND tenant_id = ?", (dead.cue_id, tenant_id)
            ).fetchone()
            if doc is None:
                raise cue_not_found(dead.cue_id)
            new = redrive_execution(_decode_cue(doc[0]), dead, new_execution_id(), now)
            db.execute(
                "INSERT INTO executions (id, tenant_id, cue_id, status, task, agent, payload, "
                "transport, triggered_by, scheduled_for, created_at, updated_at, attempts, "
                "max_attempts, redrive_of, fired_seq) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, "
                "'manual_fire', ?, ?, ?, 0, ?, ?, cuemsg_next_event())",
                (
                    new.id,
                    tenant_id,
                    new.cue_id,
                    new.task,
                    new.agent,
                    _encode(new.payload),
                    new.transport,
                    new.scheduled_for,
                    now,
                    now,
                    new.max_attempts,
                    dead.id,
                ),
            )
            db.execute(
                "UPDATE executions SET redriven_to = ?, updated_at = ?, "
                "redriven_seq = cuemsg_next_event() WHERE id = ?",
                (new.id, now, dead.id),
            )
        if new.transport == "worker":
            self.notifier.notify(tenant_id, new.task)
        return new, True

    async def waiting_by_cue(self, limit: int) -> list[tuple[str, str | None, int]]:
        return [
            (r[0], r[1], r[2])
            for r in self.db.execute(
                "SELECT e.cue_id, c.name, count(*) FROM executions e "
                "LEFT JOIN cues c ON c.id = e.cue_id WHERE e.status IN ('pending', 'retry_ready') "
                "GROUP BY e.cue_id ORDER BY 3 DESC, 1 LIMIT ?",
                (limit,),
            )
        ]
