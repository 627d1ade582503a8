"""The PostgreSQL statements of the local CueAPI's timed work: claiming a
cue's next scheduled run (and firing it), leasing webhook deliveries and
closing them, and each tenant's webhook signing secret.

Exactly once across replicas without a leader: every replica's scheduler may
see the same due cue, but only one conditional `UPDATE ... WHERE next_run =
<the run it saw>` matches (the row lock serialises them), and the execution
is inserted in that same transaction. A replica killed mid-way commits
nothing, so another takes the run on its next pass. Deliveries are leased
with `FOR UPDATE SKIP LOCKED`, like claims.
"""

from __future__ import annotations

from typing import Any

from cuemsg.server.storage.base import CueRow, ExecutionRow, OutcomeRecord, execution_from_row
from cuemsg.server.storage.postgres.fires import PostgresFires
from cuemsg.server.storage.postgres.statements import EXEC_COLS, cue_from_doc, encode_json


class PostgresTimed(PostgresFires):
    """Schedules and webhook deliveries on PostgreSQL (see `Storage` for each method)."""

    async def due_cues(self, now: float, limit: int) -> list[CueRow]:
        rows = await self._all(
            "SELECT doc, fired_count, last_run, next_run FROM cuemsg_cues "
            "WHERE status = 'active' AND next_run <= %s ORDER BY next_run LIMIT %s",
            (now, limit),
        )
        cues = []
        for doc, fired_count, last_run, next_run in rows:
            cue = cue_from_doc(doc, fired_count, last_run)
            cue.next_run = next_run  # the column is the truth (0: not computed yet)
            cues.append(cue)
        return cues

    async def advance_schedule(
        self, cue: CueRow, due: float, next_run: float | None, execution: ExecutionRow | None
    ) -> ExecutionRow | None:
        fired = 1 if execution is not None else 0
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE cuemsg_cues SET next_run = %(next)s, "
                "doc = jsonb_set(jsonb_set(doc, '{next_run}', "
                "COALESCE(to_jsonb(%(next)s::float8), 'null'::jsonb)), '{run_count}', "
                "to_jsonb(COALESCE((doc->>'run_count')::bigint, 0) + %(fired)s)), "
                "fired_count = fired_count + %(fired)s, "
                "last_run = CASE WHEN %(fired)s = 1 THEN %(now)s::float8 ELSE last_run END "
                "WHERE id = %(id)s AND status = 'active' AND next_run = %(due)s RETURNING 1",
                {
                    "next": next_run,
                    "fired": fired,
                    "now": execution.created_at if execution is not None else None,
                    "id": cue.id,
                    "due": due,
                },
            )
            if await cur.fetchone() is None:
                return None  # another replica fired it, or it was paused or changed
            if execution is None:
                return None
            await conn.execute(
                "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, "
                "payload, transport, triggered_by, scheduled_for, created_at, updated_at, "
                "attempts, max_attempts, detail) VALUES "
                "(%s, %s, %s, 'pending', %s, %s, %s::jsonb, %s, %s, %s, %s, %s, 0, %s, %s::jsonb)",
                (
                    execution.id,
                    execution.tenant_id,
                    execution.cue_id,
                    execution.task,
                    execution.agent,
                    encode_json(execution.payload).decode(),
                    execution.transport,
                    execution.triggered_by,
                    execution.scheduled_for,
                    execution.created_at,
                    execution.updated_at,
                    execution.max_attempts,
                    encode_json(execution.detail).decode() if execution.detail else None,
                ),
            )
            wake = [(execution.tenant_id, execution.task, 1)]
            if execution.transport == "worker":
                await self._publish(conn, wake)  # delivered at commit
        if execution.transport == "worker":
            self.notifier.notify(execution.tenant_id, execution.task)
        return execution

    async def webhook_tenants_due(self, now: float) -> list[str]:
        rows = await self._all(
            "SELECT DISTINCT tenant_id FROM cuemsg_executions WHERE transport = 'webhook' "
            "AND status IN ('pending', 'retry_ready') AND scheduled_for <= %s",
            (now,),
        )
        return [r[0] for r in rows]

    async def claim_deliveries(
        self, tenant_id: str, now: float, lease_seconds: float, limit: int
    ) -> list[ExecutionRow]:
        rows = await self._all(
            "WITH picked AS (SELECT seq FROM cuemsg_executions WHERE tenant_id = %s "
            "AND transport = 'webhook' AND status IN ('pending', 'retry_ready') "
            "AND scheduled_for <= %s ORDER BY scheduled_for, seq LIMIT %s "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE cuemsg_executions e SET status = 'delivering', attempts = e.attempts + 1, "
            "claimed_by_worker = 'cuemsg-webhooks', claimed_at = %s, lease_expires_at = %s, "
            "updated_at = %s, claimed_seq = cuemsg_next_event() "
            f"FROM picked WHERE e.seq = picked.seq RETURNING {EXEC_COLS}, e.seq",
            (tenant_id, now, limit, now, now + lease_seconds, now),
        )
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
        status = "retry_ready" if outcome is None else ("success" if outcome.success else "failed")
        row = await self._one(
            "UPDATE cuemsg_executions SET status = %s, outcome = %s::jsonb, detail = %s::jsonb, "
            "scheduled_for = COALESCE(%s, scheduled_for), lease_expires_at = NULL, "
            "claimed_by_worker = NULL, updated_at = COALESCE(%s, updated_at), "
            # the event feed: a final outcome is an event, a retry is not yet
            "done_seq = CASE WHEN %s THEN cuemsg_next_event() ELSE done_seq END "
            "WHERE id = %s AND status = 'delivering' AND attempts = %s RETURNING 1",
            (
                status,
                encode_json(outcome).decode() if outcome is not None else None,
                encode_json(detail).decode(),
                retry_at,
                outcome.recorded_at if outcome is not None else None,
                outcome is not None,
                execution_id,
                attempt,
            ),
        )
        return row is not None

    async def webhook_secret(self, tenant_id: str, candidate: str, *, replace: bool) -> str:
        row = await self._one(
            "INSERT INTO cuemsg_webhook_secrets AS w (tenant_id, secret, created_at) "
            "VALUES (%s, %s, extract(epoch FROM now())) ON CONFLICT (tenant_id) DO UPDATE SET "
            "secret = CASE WHEN %s THEN excluded.secret ELSE w.secret END RETURNING secret",
            (tenant_id, candidate, replace),
        )
        assert row is not None
        return str(row[0])
