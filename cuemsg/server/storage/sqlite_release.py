"""The SQLite backend's `release` (extension `executions.release`): claimed
executions handed back by their worker, pending again, the attempt not counted.

Mixed into `SQLiteStorage` (see `Storage.release`).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

from cuemsg.server.errors import ApiProblem
from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    ExecutionRow,
    check_lease,
    execution_from_row,
)
from cuemsg.server.storage.sqlite_upkeep import LOST_SET

# Pending again as if this claim had not been made (its attempt is given back), but
# stamped like a lost lease so the event feed shows the worker let go of it.
RELEASE_SET = (
    "status = 'pending', attempts = attempts - 1, claimed_by_worker = NULL, "
    "claimed_at = NULL, lease_expires_at = NULL, updated_at = ?, " + LOST_SET
)


class SQLiteRelease:
    """`release` on SQLite."""

    # Defined by SQLiteStorage.
    notifier: Notifier
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _owned: Callable[[sqlite3.Connection, str, str], tuple[str, str | None, str | None]]

    async def release(
        self, tenant_id: str, execution_ids: list[str], worker_id: str, now: float
    ) -> list[ExecutionRow | ApiProblem]:
        results: list[ExecutionRow | ApiProblem] = []
        wake: Counter[str | None] = Counter()
        with self._tx() as db:  # one commit; each item stands on its own
            for execution_id in execution_ids:
                try:
                    status, holder, _ = self._owned(db, tenant_id, execution_id)
                    check_lease(execution_id, status, holder, worker_id)
                except ApiProblem as problem:
                    results.append(problem)
                    continue
                row = db.execute(
                    f"UPDATE executions SET {RELEASE_SET} WHERE id = ? "
                    f"RETURNING {EXECUTION_COLUMNS}",
                    (now, now, execution_id),
                ).fetchone()
                released = execution_from_row(row)
                results.append(released)
                wake[released.task] += 1
        for task, count in wake.items():
            self.notifier.notify(tenant_id, task, count)
        return results
