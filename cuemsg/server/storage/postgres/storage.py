"""`PostgresStorage`: the `Storage` protocol on PostgreSQL (meta, tenants, cues,
executions, claims, leases, workers and the sweep); firing is in `fires.py`,
outcomes in `outcomes.py`, the event feed and redrive in `feed.py`, connections
in `connection.py`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import psycopg

from cuemsg._exceptions import StorageError
from cuemsg.server.errors import execution_not_found, not_claimable
from cuemsg.server.storage.base import (
    IDEMPOTENCY_TTL,
    CueRow,
    ExecutionRow,
    WorkerRow,
    check_lease,
    claimable_where,
    execution_from_row,
    name_taken,
    unknown_cursor,
    where_equal,
    within_bytes,
)
from cuemsg.server.storage.postgres.feed import PostgresFeed
from cuemsg.server.storage.postgres.outcomes import PostgresOutcomes
from cuemsg.server.storage.postgres.release import PostgresRelease
from cuemsg.server.storage.postgres.statements import (
    CLAIM_SET,
    CLAIMABLE_WHERE,
    EXEC_COLS,
    IS_RELAXED,
    LOST_SET,
    RELAXED,
    claim_next_statement,
    cue_from_doc,
    encode_json,
)

_decode_handlers = msgspec.json.Decoder(list[str]).decode


class PostgresStorage(PostgresFeed, PostgresOutcomes, PostgresRelease):
    """The backend for several replicas: `url` is a `postgresql://` URL (libpq syntax).

    Args:
        url: where to connect; `?options=-csearch_path%3D<schema>` picks the schema,
            `pool_min_size=` / `pool_max_size=` override the two below.
        min_size: connections the pool keeps open.
        max_size: most connections the pool opens (plus one for LISTEN).
        open_timeout: seconds `open()` waits for the database before giving up.
    """

    # A fire claims its new work for a parked claim of this replica (`fires.py`); other
    # replicas' claims are woken by NOTIFY and claim themselves. Carried outcomes are
    # recorded by the claim itself (its statements yield to the event loop).
    hands_over = True
    settle_rides = False

    # -- meta ------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM cuemsg_meta WHERE key = %s", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._one(
            "INSERT INTO cuemsg_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING 1",
            (key, value),
        )

    # -- tenants ---------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, email: str, key_hash: str, now: float) -> None:
        # One statement, so one implicit transaction: both rows or neither.
        await self._one(
            "WITH t AS (INSERT INTO cuemsg_tenants (id, email, created_at) "
            "VALUES (%s, %s, %s) RETURNING id) "
            "INSERT INTO cuemsg_api_keys (key_hash, tenant_id, created_at) "
            "SELECT %s, id, %s FROM t RETURNING 1",
            (tenant_id, email, now, key_hash, now),
        )

    async def tenant_for_key(self, key_hash: str) -> str | None:
        row = await self._one(
            "SELECT tenant_id FROM cuemsg_api_keys WHERE key_hash = %s", (key_hash,)
        )
        return row[0] if row else None

    async def add_api_key(self, tenant_id: str, key_hash: str, now: float) -> None:
        await self._one(
            "INSERT INTO cuemsg_api_keys (key_hash, tenant_id, created_at) "
            "VALUES (%s, %s, %s) RETURNING 1",
            (key_hash, tenant_id, now),
        )

    async def count_unsettled(self, tenant_id: str) -> int:
        row = await self._one(
            "SELECT count(*) FROM cuemsg_executions WHERE tenant_id = %s "
            "AND status IN ('pending', 'retry_ready', 'delivering')",
            (tenant_id,),
        )
        return int(row[0]) if row else 0

    async def stored_bytes(self, tenant_id: str) -> int:
        # pg_column_size reads the stored size, not the value: no detoasting.
        row = await self._one(
            "SELECT coalesce(sum(pg_column_size(payload)), 0) FROM cuemsg_executions "
            "WHERE tenant_id = %s",
            (tenant_id,),
        )
        return int(row[0]) if row else 0

    # -- cues ------------------------------------------------------------------

    async def create_cue(self, cue: CueRow) -> CueRow:
        try:
            await self._one(
                "INSERT INTO cuemsg_cues "
                "(id, tenant_id, name, status, created_at, fired_count, last_run, doc, next_run) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING 1",
                (
                    cue.id,
                    cue.tenant_id,
                    cue.name,
                    cue.status,
                    cue.created_at,
                    cue.fired_count,
                    cue.last_run,
                    encode_json(cue).decode(),
                    cue.next_run,
                ),
            )
        except StorageError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise name_taken(cue.name) from exc
            raise
        return cue

    async def get_cue(self, tenant_id: str, cue_id: str) -> CueRow | None:
        row = await self._one(
            "SELECT doc, fired_count, last_run FROM cuemsg_cues WHERE id = %s AND tenant_id = %s",
            (cue_id, tenant_id),
        )
        return cue_from_doc(*row) if row else None

    async def list_cues(
        self, tenant_id: str, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[CueRow], int]:
        where, args = where_equal("%s", tenant_id=tenant_id, status=status)
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM cuemsg_cues WHERE {where}", args)
            total = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT doc, fired_count, last_run FROM cuemsg_cues WHERE {where} "
                "ORDER BY created_at, id LIMIT %s OFFSET %s",
                [*args, limit, offset],
            )
            rows = await cur.fetchall()
        assert total is not None
        return [cue_from_doc(*r) for r in rows], int(total[0])

    async def update_cue(
        self, tenant_id: str, cue_id: str, changes: dict[str, Any], now: float
    ) -> CueRow | None:
        try:
            async with self._tx() as conn:
                cur = await conn.execute(
                    "SELECT doc, fired_count, last_run FROM cuemsg_cues "
                    "WHERE id = %s AND tenant_id = %s FOR UPDATE",
                    (cue_id, tenant_id),
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                cue = msgspec.structs.replace(cue_from_doc(*row), **changes, updated_at=now)
                await conn.execute(
                    "UPDATE cuemsg_cues SET name = %s, status = %s, doc = %s, next_run = %s "
                    "WHERE id = %s",
                    (cue.name, cue.status, encode_json(cue).decode(), cue.next_run, cue_id),
                )
        except StorageError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise name_taken(str(changes.get("name"))) from exc
            raise
        return cue

    async def delete_cue(self, tenant_id: str, cue_id: str) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "DELETE FROM cuemsg_cues WHERE id = %s AND tenant_id = %s", (cue_id, tenant_id)
            )
            deleted = cur.rowcount > 0
            await conn.execute(
                "DELETE FROM cuemsg_idempotency WHERE tenant_id = %s AND cue_id = %s",
                (tenant_id, cue_id),
            )
        return deleted

    # -- executions ------------------------------------------------------------

    async def get_execution(self, tenant_id: str, execution_id: str) -> ExecutionRow | None:
        row = await self._one(
            f"SELECT {EXEC_COLS} FROM cuemsg_executions WHERE id = %s AND tenant_id = %s",
            (execution_id, tenant_id),
        )
        return execution_from_row(row) if row else None

    async def list_executions(
        self,
        tenant_id: str,
        *,
        cue_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        before: str | None = None,
        max_bytes: int = 0,
    ) -> tuple[list[ExecutionRow], int]:
        clause, args = where_equal("%s", tenant_id=tenant_id, cue_id=cue_id, status=status)
        async with self._conn() as conn:
            if before is not None:
                # The cursor is an id; its `seq` keeps the page an index range.
                cur = await conn.execute(
                    "SELECT seq FROM cuemsg_executions WHERE id = %s AND tenant_id = %s",
                    (before, tenant_id),
                )
                cursor = await cur.fetchone()
                if cursor is None:
                    raise unknown_cursor(before)
                clause, args = f"{clause} AND seq < %s", [*args, cursor[0]]
            cur = await conn.execute(f"SELECT count(*) FROM cuemsg_executions WHERE {clause}", args)
            total = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT {EXEC_COLS} FROM cuemsg_executions WHERE {clause} "
                "ORDER BY seq DESC LIMIT %s OFFSET %s",
                [*args, limit, offset],
            )
            rows = within_bytes(await cur.fetchall(), max_bytes)
        assert total is not None
        return [execution_from_row(r) for r in rows], int(total[0])

    async def list_claimable(
        self,
        tenant_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        limit: int,
        max_bytes: int = 0,
    ) -> list[ExecutionRow]:
        where, args = claimable_where("%s", tenant_id, task, agent, now)
        rows = await self._all(
            f"SELECT e.*, c.name FROM (SELECT {EXEC_COLS}, seq FROM cuemsg_executions "
            f"WHERE {where} ORDER BY scheduled_for, seq LIMIT %s) e "
            "LEFT JOIN cuemsg_cues c ON c.id = e.cue_id ORDER BY e.scheduled_for, e.seq",
            [*args, limit],
        )
        return [execution_from_row(r, r[-1]) for r in within_bytes(rows, max_bytes)]

    async def claim(
        self, tenant_id: str, execution_id: str, worker_id: str, now: float, lease_seconds: float
    ) -> ExecutionRow:
        # One conditional UPDATE: a racing claim waits for the row lock, then
        # re-checks the condition against the winner's commit and matches nothing.
        async with self._conn() as conn:
            cur = await conn.execute(
                f"WITH {RELAXED} UPDATE cuemsg_executions e SET {CLAIM_SET} "
                f"WHERE id = %s AND tenant_id = %s AND {CLAIMABLE_WHERE} AND {IS_RELAXED} "
                f"RETURNING {EXEC_COLS}",
                (worker_id, now, now + lease_seconds, now, execution_id, tenant_id, now),
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "SELECT 1 FROM cuemsg_executions WHERE id = %s AND tenant_id = %s",
                    (execution_id, tenant_id),
                )
                if await cur.fetchone() is None:
                    raise execution_not_found(execution_id)
                raise not_claimable(execution_id)
        return execution_from_row(row)

    async def claim_next(
        self,
        tenant_id: str,
        worker_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> list[ExecutionRow]:
        where, args = claimable_where("%s", tenant_id, task, agent, now)
        rows = await self._all(
            claim_next_statement(where, relaxed=True),
            [*args, limit, worker_id, now, now + lease_seconds, now],
        )
        # RETURNING gives no order guarantee: restore oldest-first.
        rows.sort(key=lambda r: (r[9], r[-1]))
        return [execution_from_row(r) for r in rows]

    async def heartbeat(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        now: float,
        lease_seconds: float,
    ) -> ExecutionRow:
        update = (
            f"WITH {RELAXED} UPDATE cuemsg_executions SET lease_expires_at = %s, "
            "updated_at = %s WHERE id = %s AND tenant_id = %s AND status = 'delivering' "
            f"AND {IS_RELAXED} {{}} "
            f"RETURNING {EXEC_COLS}"
        )
        args: list[Any] = [now + lease_seconds, now, execution_id, tenant_id]
        owner = "" if worker_id is None else "AND claimed_by_worker = %s"
        if worker_id is not None:
            args.append(worker_id)
        # Happy path: the checks are the UPDATE's own condition (atomic under its row lock).
        row = await self._one(update.format(owner), args)
        if row is None:
            # Something is wrong: find out what under a row lock, and answer exactly.
            async with self._tx() as conn:
                status, holder, _ = await self._locked(conn, tenant_id, execution_id)
                check_lease(execution_id, status, holder, worker_id)
                cur = await conn.execute(update.format(""), args[:4])
                row = await cur.fetchone()
        assert row is not None
        return execution_from_row(row)

    # -- workers ---------------------------------------------------------------

    async def worker_heartbeat(
        self, tenant_id: str, worker_id: str, handlers: list[str], now: float
    ) -> None:
        await self._one(
            "INSERT INTO cuemsg_workers (tenant_id, worker_id, handlers, last_heartbeat) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, worker_id) DO UPDATE SET "
            "handlers = excluded.handlers, last_heartbeat = excluded.last_heartbeat RETURNING 1",
            (tenant_id, worker_id, encode_json(handlers).decode(), now),
        )

    async def list_workers(self, tenant_id: str) -> list[WorkerRow]:
        rows = await self._all(
            "SELECT worker_id, handlers, last_heartbeat FROM cuemsg_workers "
            "WHERE tenant_id = %s ORDER BY last_heartbeat DESC",
            (tenant_id,),
        )
        return [
            WorkerRow(worker_id=r[0], handlers=_decode_handlers(r[1]), last_heartbeat=r[2])
            for r in rows
        ]

    # -- time ------------------------------------------------------------------

    async def sweep(self, now: float, *, since: float, unclaimed_timeout: float) -> None:
        # Each UPDATE takes only rows nobody else holds (SKIP LOCKED): replicas
        # sweeping at once split the work, never wait on each other, never deadlock;
        # a row skipped now (an outcome is being written) is looked at next pass.
        requeued: list[tuple[str, str | None, int]] = []
        async with self._conn() as conn:
            # Past the claim cap: a message that kills every receiver stops here.
            cur = await conn.execute(
                f"WITH {RELAXED}, gone AS (SELECT seq FROM cuemsg_executions "
                "WHERE status = 'delivering' "
                "AND lease_expires_at < %s AND attempts >= max_attempts "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE cuemsg_executions e SET status = 'failed', updated_at = %s, "
                f"{LOST_SET}, done_seq = cuemsg_next_event(), "
                "lease_expires_at = NULL, outcome = jsonb_build_object('success', false, "
                "'error', 'lease expired after ' || e.attempts || ' claims (claim cap reached)', "
                "'recorded_at', %s::float8) "
                f"FROM gone WHERE e.seq = gone.seq AND {IS_RELAXED}",
                (now, now, now, now),
            )
            self.swept["lease_expired"] += max(cur.rowcount, 0)
            cur = await conn.execute(
                f"WITH {RELAXED}, gone AS (SELECT seq FROM cuemsg_executions "
                "WHERE status = 'delivering' "
                "AND lease_expires_at < %s AND attempts < max_attempts "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE cuemsg_executions e SET status = 'pending', claimed_by_worker = NULL, "
                f"claimed_at = NULL, lease_expires_at = NULL, updated_at = %s, {LOST_SET} "
                f"FROM gone WHERE e.seq = gone.seq AND {IS_RELAXED} RETURNING e.tenant_id, e.task",
                (now, now, now),
            )
            counts = Counter((r[0], r[1]) for r in await cur.fetchall())
            requeued = [(tenant, task, n) for (tenant, task), n in counts.items()]
            self.swept["lease_expired"] += sum(counts.values())
            if requeued:
                # Waiters on other replicas want these too (committed already: autocommit).
                await self._publish(conn, requeued)
            if unclaimed_timeout > 0:
                cur = await conn.execute(
                    f"WITH {RELAXED}, late AS (SELECT seq FROM cuemsg_executions "
                    "WHERE status IN ('pending', 'retry_ready') AND attempts = 0 "
                    "AND scheduled_for < %s FOR UPDATE SKIP LOCKED) "
                    "UPDATE cuemsg_executions e SET status = 'missed', updated_at = %s, "
                    "done_seq = cuemsg_next_event() "
                    f"FROM late WHERE e.seq = late.seq AND {IS_RELAXED}",
                    (now - unclaimed_timeout, now),
                )
                self.swept["missed"] += max(cur.rowcount, 0)
            # Scheduled work that came due: every replica sweeps, so each wakes
            # only its own waiters.
            cur = await conn.execute(
                "SELECT tenant_id, task, count(*) FROM cuemsg_executions "
                "WHERE status IN ('pending', 'retry_ready') AND scheduled_for > %s "
                "AND scheduled_for <= %s AND scheduled_for > created_at "
                "GROUP BY tenant_id, task",
                (since, now),
            )
            due = [(r[0], r[1], int(r[2])) for r in await cur.fetchall()]
            await conn.execute(
                "DELETE FROM cuemsg_idempotency WHERE (tenant_id, cue_id, key) IN "
                "(SELECT tenant_id, cue_id, key FROM cuemsg_idempotency WHERE created_at < %s "
                "LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (now - IDEMPOTENCY_TTL,),
            )
        for tenant_id, task, count in (*requeued, *due):
            self.notifier.notify(tenant_id, task, count)

    async def purge(self, *, settled_before: float | None, dead_before: float | None) -> int:
        # Batches of rows nobody holds (SKIP LOCKED): replicas purging at once
        # split the work, and a row being written now is left for the next pass.
        clauses: list[tuple[str, float]] = []
        if settled_before is not None:
            clauses.append(("status = 'success' AND updated_at < %s", settled_before))
            # Replies whose requester is gone: no one will ever claim them.
            clauses.append(
                (
                    "status IN ('pending', 'retry_ready') AND created_at < %s "
                    "AND payload->'cuemsg'->>'kind' IN ('reply', 'error')",
                    settled_before,
                )
            )
        if dead_before is not None:
            clauses.append(("status IN ('failed', 'missed') AND updated_at < %s", dead_before))
        gone = 0
        async with self._conn() as conn:
            for where, before in clauses:
                while True:
                    cur = await conn.execute(
                        "DELETE FROM cuemsg_executions WHERE seq IN (SELECT seq FROM "
                        f"cuemsg_executions WHERE {where} LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                        (before,),
                    )
                    gone += cur.rowcount
                    if cur.rowcount < 10000:
                        break
        return gone
