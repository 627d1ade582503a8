"""The event feed and redrive on PostgreSQL.

Stamps come from one sequence, but transactions on several replicas commit in
any order: a reader could see stamp 7 while stamp 5 is still uncommitted,
move past it, and lose it. So a read first takes the sequence's value H,
then waits until every transaction that had an id by then has ended
(`cuemsg_next_event()` gives each transaction its id before it takes a
stamp, so any stamp up to H belongs to one of them); then every stamp up to
H is visible and the batch ends at H at most (later stamps on the rows read
wait for the next read). Each read takes a transaction id of its own to mark
that moment. Transactions here last milliseconds; a writer that
stays open longer than `SETTLE_WAIT` (someone else's, on the same database)
is not waited for beyond it, and the read goes on with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from psycopg import AsyncConnection

from cuemsg.server.errors import cue_not_found, execution_not_found
from cuemsg.server.storage.base import ExecutionRow, execution_from_row, new_execution_id
from cuemsg.server.storage.feed import FEED_COLUMNS, FeedBatch, bounded, feed_row, feed_where
from cuemsg.server.storage.postgres.connection import PostgresConnection
from cuemsg.server.storage.postgres.statements import EXEC_COLS, cue_from_doc, encode_json
from cuemsg.server.storage.redrive import check_redrivable, redrive_execution

log = logging.getLogger("cuemsg.server.postgres")

#: Longest a feed read waits for the writers in progress when it began (seconds).
SETTLE_WAIT = 2.0

_SELECT = (
    f"SELECT {FEED_COLUMNS} FROM cuemsg_executions e LEFT JOIN cuemsg_cues c ON c.id = e.cue_id"
)


class PostgresFeed(PostgresConnection):
    """`event_head`, `read_events`, `redrive` and the sweep's counts, on top of the
    connection layer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What this replica's sweeps did, for /metrics: `lease_expired`, `missed`.
        self.swept: Counter[str] = Counter()

    async def waiting_by_cue(self, limit: int) -> list[tuple[str, str | None, int]]:
        rows = await self._all(
            "SELECT e.cue_id, c.name, count(*) FROM cuemsg_executions e "
            "LEFT JOIN cuemsg_cues c ON c.id = e.cue_id "
            "WHERE e.status IN ('pending', 'retry_ready') "
            "GROUP BY e.cue_id, c.name ORDER BY 3 DESC, 1 LIMIT %s",
            (limit,),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def event_head(self) -> int:
        row = await self._one("SELECT last_value, is_called FROM cuemsg_event_seq")
        assert row is not None
        return int(row[0]) if row[1] else 0

    async def read_events(
        self, tenant_id: str, after: int, *, cue_id: str | None, limit: int
    ) -> FeedBatch:
        async with self._conn() as conn:
            head = await self._settled_head(conn)
            where, args = feed_where("%s", tenant_id, cue_id)
            cur = await conn.execute(
                f"{_SELECT} WHERE {where} AND e.event_seq > %s ORDER BY e.event_seq LIMIT %s",
                [*args, after, limit],
            )
            rows = [feed_row(r) for r in await cur.fetchall()]
            late = []
            if len(rows) >= limit:
                cut = rows[-1].event_seq
                cur = await conn.execute(
                    f"{_SELECT} WHERE {where} AND e.event_seq > %s AND e.fired_seq <= %s",
                    [*args, cut, cut],
                )
                late = [feed_row(r) for r in await cur.fetchall()]
        return bounded(rows, late, limit, head)

    async def _settled_head(self, conn: AsyncConnection[Any]) -> int:
        """The sequence's value, once every stamp up to it is committed or abandoned."""
        cur = await conn.execute("SELECT last_value, is_called FROM cuemsg_event_seq")
        row = await cur.fetchone()
        assert row is not None
        head = int(row[0]) if row[1] else 0
        # A transaction id of our own, given after that read, is above the id of every
        # transaction holding a stamp up to `head`; once our statement has ended, a
        # snapshot lists every one of those still running (below its xmax).
        cur = await conn.execute("SELECT pg_current_xact_id()::text")
        mark = await cur.fetchone()
        assert mark is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_WAIT
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot()) x WHERE x < %s::xid8",
                (mark[0],),
            )
            busy = await cur.fetchone()
            if busy is None or busy[0] == 0:
                return head
            if loop.time() > deadline:
                log.warning(
                    "event feed: %d transaction(s) still writing after %.0fs; reading on",
                    busy[0],
                    SETTLE_WAIT,
                )
                return head
            await asyncio.sleep(0.002)

    async def redrive(
        self, tenant_id: str, execution_id: str, now: float
    ) -> tuple[ExecutionRow, bool]:
        async with self._tx() as conn:
            cur = await conn.execute(
                f"SELECT {EXEC_COLS} FROM cuemsg_executions "
                "WHERE id = %s AND tenant_id = %s FOR UPDATE",
                (execution_id, tenant_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise execution_not_found(execution_id)
            dead = execution_from_row(row)
            if dead.redriven_to is not None:
                cur = await conn.execute(
                    f"SELECT {EXEC_COLS} FROM cuemsg_executions WHERE id = %s",
                    (dead.redriven_to,),
                )
                again = await cur.fetchone()
                if again is not None:
                    return execution_from_row(again), False
            check_redrivable(dead)
            cur = await conn.execute(
                "SELECT doc, fired_count, last_run FROM cuemsg_cues "
                "WHERE id = %s AND tenant_id = %s",
                (dead.cue_id, tenant_id),
            )
            found = await cur.fetchone()
            if found is None:
                raise cue_not_found(dead.cue_id)
            cue = cue_from_doc(found[0], found[1], found[2])
            new = redrive_execution(cue, dead, new_execution_id(), now)
            await conn.execute(
                "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, "
                "payload, transport, triggered_by, scheduled_for, created_at, updated_at, "
                "attempts, max_attempts, redrive_of) VALUES (%s, %s, %s, 'pending', %s, %s, "
                "%s::jsonb, %s, 'manual_fire', %s, %s, %s, 0, %s, %s)",
                (
                    new.id,
                    tenant_id,
                    new.cue_id,
                    new.task,
                    new.agent,
                    encode_json(new.payload).decode(),
                    new.transport,
                    new.scheduled_for,
                    now,
                    now,
                    new.max_attempts,
                    dead.id,
                ),
            )
            await conn.execute(
                "UPDATE cuemsg_executions SET redriven_to = %s, updated_at = %s, "
                "redriven_seq = cuemsg_next_event() WHERE id = %s",
                (new.id, now, dead.id),
            )
            if new.transport == "worker":
                await self._publish(conn, [(tenant_id, new.task, 1)])
        if new.transport == "worker":
            self.notifier.notify(tenant_id, new.task)
        return new, True
