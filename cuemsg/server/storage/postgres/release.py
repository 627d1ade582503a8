"""`release` on PostgreSQL (extension `executions.release`): claimed executions
handed back by their worker, pending again, the attempt not counted.

Mixed into `PostgresStorage` (see `Storage.release`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from psycopg import AsyncConnection

from cuemsg.server.errors import ApiProblem, execution_not_found
from cuemsg.server.storage.base import ExecutionRow, check_lease, execution_from_row
from cuemsg.server.storage.postgres.connection import PostgresConnection
from cuemsg.server.storage.postgres.statements import EXEC_COLS, LOST_SET

# Pending again as if this claim had not been made (its attempt is given back), but
# stamped like a lost lease so the event feed shows the worker let go of it.
_RELEASE = (
    "UPDATE cuemsg_executions e SET status = 'pending', attempts = e.attempts - 1, "
    "claimed_by_worker = NULL, claimed_at = NULL, lease_expires_at = NULL, updated_at = %s, "
    f"{LOST_SET} WHERE id = %s RETURNING {EXEC_COLS}"
)


class PostgresRelease(PostgresConnection):
    """`release` on top of the connection layer."""

    async def release(
        self, tenant_id: str, execution_ids: list[str], worker_id: str, now: float
    ) -> list[ExecutionRow | ApiProblem]:
        results: dict[int, ExecutionRow | ApiProblem] = {}
        wake: Counter[str | None] = Counter()
        async with self._tx() as conn:  # one commit for the batch
            # Lock rows in id order so two batches over the same rows cannot deadlock.
            for index in sorted(range(len(execution_ids)), key=lambda i: execution_ids[i]):
                execution_id = execution_ids[index]
                try:
                    status, holder = await _holder(conn, tenant_id, execution_id)
                    check_lease(execution_id, status, holder, worker_id)
                except ApiProblem as problem:
                    results[index] = problem
                    continue
                cur = await conn.execute(_RELEASE, (now, now, execution_id))
                row = await cur.fetchone()
                assert row is not None
                released = execution_from_row(row)
                results[index] = released
                wake[released.task] += 1
            pairs = [(tenant_id, task, n) for task, n in wake.items()]
            if pairs:
                await self._publish(conn, pairs)  # other replicas' waiters: at commit
        for task, count in wake.items():
            self.notifier.notify(tenant_id, task, count)
        return [results[i] for i in range(len(execution_ids))]


async def _holder(
    conn: AsyncConnection[Any], tenant_id: str, execution_id: str
) -> tuple[str, str | None]:
    """The execution's status and lease holder, its row locked; 404 if unknown."""
    cur = await conn.execute(
        "SELECT status, claimed_by_worker FROM cuemsg_executions "
        "WHERE id = %s AND tenant_id = %s FOR UPDATE",
        (execution_id, tenant_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise execution_not_found(execution_id)
    return row[0], row[1]
