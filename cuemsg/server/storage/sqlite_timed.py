"""The SQLite statements of the local CueAPI's timed work: claiming a cue's
next scheduled run (and firing it), leasing webhook deliveries and closing
them, and each tenant's webhook signing secret. Mixed into `SQLiteStorage`.

One connection on one event loop makes each method's transaction atomic; the
conditional updates are still written as claims so that the logic reads the
same as on PostgreSQL, where replicas race for them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    CueRow,
    ExecutionRow,
    OutcomeRecord,
    cue_from_doc,
    execution_from_row,
)

# Schema version 3: the cue's next run as a column (the scheduler's claim and
# index; 0 = to be computed, for a scheduled cue made before), an execution's
# `detail`, and each tenant's webhook signing secret.
MIGRATION_3 = """
ALTER TABLE cues ADD COLUMN next_run REAL;
UPDATE cues SET doc = json_set(doc, '$.next_run', 0)
    WHERE json_extract(doc, '$.next_run') IS NULL AND json_extract(doc, '$.schedule') IS NOT NULL;
UPDATE cues SET next_run = json_extract(doc, '$.next_run');
ALTER TABLE executions ADD COLUMN detail TEXT;
CREATE TABLE webhook_secrets (
    tenant_id TEXT PRIMARY KEY, secret TEXT NOT NULL, created_at REAL NOT NULL);
"""
# Due cues (active ones only: mailboxes are paused) and due webhook deliveries
# (webhook rows only, so a worker backlog costs the dispatcher nothing).
TIMED_INDEXES = """
CREATE INDEX IF NOT EXISTS ix_cues_due ON cues (next_run) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS ix_exec_webhook_due ON executions (tenant_id, scheduled_for)
    WHERE transport = 'webhook' AND status IN ('pending', 'retry_ready');
"""

_encode = msgspec.json.Encoder().encode
_decode_cue = msgspec.json.Decoder(CueRow).decode


class SQLiteTimed:
    """Schedules and webhook deliveries on SQLite (see `Storage` for each method)."""

    # Defined by SQLiteStorage.
    notifier: Notifier
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    async def due_cues(self, now: float, limit: int) -> list[CueRow]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT doc, fired_count, last_run, next_run FROM cues WHERE status = 'active' "
                "AND next_run <= ? ORDER BY next_run LIMIT ?",
                (now, limit),
            ).fetchall()
        return [_with_next_run(cue_from_doc(*row[:3]), row[3]) for row in rows]

    async def advance_schedule(
        self, cue: CueRow, due: float, next_run: float | None, execution: ExecutionRow | None
    ) -> ExecutionRow | None:
        with self._tx() as db:
            row = db.execute(
                "UPDATE cues SET next_run = ? WHERE id = ? AND status = 'active' "
                "AND next_run = ? RETURNING doc",
                (next_run, cue.id, due),
            ).fetchone()
            if row is None:
                return None  # paused, deleted, changed or already fired meanwhile
            stored = _decode_cue(row[0])  # its counters are the columns' (cue_from_doc)
            stored.next_run = next_run
            if execution is not None:
                _insert_execution(db, execution)
                stored.run_count += 1
                db.execute(
                    "UPDATE cues SET fired_count = fired_count + 1, last_run = ? WHERE id = ?",
                    (execution.created_at, cue.id),
                )
            db.execute("UPDATE cues SET doc = ? WHERE id = ?", (_encode(stored), cue.id))
        if execution is not None and execution.transport == "worker":
            self.notifier.notify(execution.tenant_id, execution.task)
        return execution

    async def webhook_tenants_due(self, now: float) -> list[str]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT DISTINCT tenant_id FROM executions WHERE transport = 'webhook' "
                "AND status IN ('pending', 'retry_ready') AND scheduled_for <= ?",
                (now,),
            ).fetchall()
        return [r[0] for r in rows]

    async def claim_deliveries(
        self, tenant_id: str, now: float, lease_seconds: float, limit: int
    ) -> list[ExecutionRow]:
        with self._tx() as db:
            rows = db.execute(
                "UPDATE executions SET status = 'delivering', attempts = attempts + 1, "
                "claimed_by_worker = 'cuemsg-webhooks', claimed_at = ?, lease_expires_at = ?, "
                "updated_at = ?, claimed_seq = cuemsg_next_event() "
                "WHERE seq IN (SELECT seq FROM executions WHERE tenant_id = ? "
                "AND transport = 'webhook' AND status IN ('pending', 'retry_ready') "
                "AND scheduled_for <= ? ORDER BY scheduled_for, seq LIMIT ?) "
                f"RETURNING {EXECUTION_COLUMNS}, seq",
                (now, now + lease_seconds, now, tenant_id, now, limit),
            ).fetchall()
        rows.sort(key=lambda r: (r[9], r[-1]))
        return [execution_from_row(r) for r in rows]

    async def finish_delivery(
        self,
        execution_id: str,
        attempt: int,
        *,
        outcome: OutcomeRecord | None,
        retry_at: float | None,
        detail: dict[str, Any],
    ) -> bool:
        now = outcome.recorded_at if outcome is not None else None
        with self._tx() as db:
            cur = db.execute(
                "UPDATE executions SET status = ?, outcome = ?, detail = ?, "
                "scheduled_for = COALESCE(?, scheduled_for), lease_expires_at = NULL, "
                "claimed_by_worker = NULL, updated_at = COALESCE(?, updated_at), "
                # the event feed: a final outcome is an event, a retry is not yet
                "done_seq = CASE WHEN ? THEN cuemsg_next_event() ELSE done_seq END "
                "WHERE id = ? AND status = 'delivering' AND attempts = ?",
                (
                    _final_status(outcome),
                    _encode(outcome) if outcome is not None else None,
                    _encode(detail),
                    retry_at,
                    now,
                    outcome is not None,
                    execution_id,
                    attempt,
                ),
            )
        return cur.rowcount > 0

    async def webhook_secret(self, tenant_id: str, candidate: str, *, replace: bool) -> str:
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO webhook_secrets (tenant_id, secret, created_at) "
                "VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET "
                "secret = CASE WHEN ? THEN excluded.secret ELSE secret END RETURNING secret",
                (tenant_id, candidate, time.time(), replace),
            ).fetchone()
        return str(row[0])


def _final_status(outcome: OutcomeRecord | None) -> str:
    if outcome is None:
        return "retry_ready"
    return "success" if outcome.success else "failed"


def _with_next_run(cue: CueRow, next_run: float | None) -> CueRow:
    cue.next_run = next_run  # the column is the truth (it may hold 0: not computed yet)
    return cue


def _insert_execution(db: sqlite3.Connection, e: ExecutionRow) -> None:
    db.execute(
        "INSERT INTO executions (id, tenant_id, cue_id, status, task, agent, payload, "
        "transport, triggered_by, scheduled_for, created_at, updated_at, attempts, "
        "max_attempts, detail, fired_seq) "
        "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, cuemsg_next_event())",
        (
            e.id,
            e.tenant_id,
            e.cue_id,
            e.task,
            e.agent,
            _encode(e.payload),
            e.transport,
            e.triggered_by,
            e.scheduled_for,
            e.created_at,
            e.updated_at,
            e.max_attempts,
            _encode(e.detail) if e.detail is not None else None,
        ),
    )
