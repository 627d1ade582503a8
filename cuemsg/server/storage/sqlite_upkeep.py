"""The SQLite backend's upkeep: the sweep (lapsed leases, the claim cap, unclaimed
messages, due wake-ups, old idempotency keys) and the purge of settled history.

Both run in the background (`server/sweeper.py`, `server/retention.py`);
mixed into `SQLiteStorage` (see `Storage` for each method).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import IDEMPOTENCY_TTL

#: Rows (by seq) a purge looks at per transaction.
_PURGE_WINDOW = 5000
# A lease ran out: stamp it for the event feed, and keep who lost it and when
# (the claim is cleared).
LOST_SET = (
    "lost_seq = cuemsg_next_event(), lost_worker = claimed_by_worker, lost_at = ?, "
    "lost_claimed_at = claimed_at, lost_claim_seq = claimed_seq, lost_attempt = attempts"
)


class SQLiteUpkeep:
    """The sweep and the purge on SQLite."""

    # Defined by SQLiteStorage.
    notifier: Notifier
    swept: Counter[str]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    if TYPE_CHECKING:

        @property
        def db(self) -> sqlite3.Connection: ...

    async def sweep(self, now: float, *, since: float, unclaimed_timeout: float) -> None:
        wake: Counter[tuple[str, str | None]] = Counter()
        with self._tx() as db:
            # Past the claim cap: a message that kills every receiver stops here.
            capped = db.execute(
                "UPDATE executions SET status = 'failed', updated_at = ?, lease_expires_at = NULL, "
                f"{LOST_SET}, done_seq = cuemsg_next_event(), "
                "outcome = json_object('success', json('false'), 'error', "
                "'lease expired after ' || attempts || ' claims (claim cap reached)', "
                "'recorded_at', ?) "
                "WHERE status = 'delivering' AND lease_expires_at < ? "
                "AND attempts >= max_attempts",
                (now, now, now, now),
            ).rowcount
            requeued = db.execute(
                "UPDATE executions SET status = 'pending', claimed_by_worker = NULL, "
                f"claimed_at = NULL, lease_expires_at = NULL, updated_at = ?, {LOST_SET} "
                "WHERE status = 'delivering' AND lease_expires_at < ? "
                "RETURNING tenant_id, task",
                (now, now, now),
            ).fetchall()
            wake.update(requeued)
            self.swept["lease_expired"] += capped + len(requeued)
            if unclaimed_timeout > 0:  # walks `ix_exec_ready_task`: every ready execution
                self.swept["missed"] += db.execute(
                    "UPDATE executions SET status = 'missed', updated_at = ?, "
                    "done_seq = cuemsg_next_event() "
                    "WHERE status IN ('pending', 'retry_ready') AND attempts = 0 "
                    "AND scheduled_for < ?",
                    (now, now - unclaimed_timeout),
                ).rowcount
            # Scheduled executions now due (the terms of `ix_exec_scheduled`, which holds them).
            for tenant_id, task, count in db.execute(
                "SELECT tenant_id, task, count(*) FROM executions "
                "WHERE status IN ('pending', 'retry_ready') AND scheduled_for > ? "
                "AND scheduled_for <= ? AND scheduled_for > created_at GROUP BY tenant_id, task",
                (since, now),
            ).fetchall():
                wake[(tenant_id, task)] += count
            db.execute("DELETE FROM idempotency WHERE created_at < ?", (now - IDEMPOTENCY_TTL,))
        for (tenant_id, task), count in wake.items():
            self.notifier.notify(tenant_id, task, count)

    async def purge(self, *, settled_before: float | None, dead_before: float | None) -> int:
        parts: list[tuple[str, float]] = []
        if settled_before is not None:
            parts.append(("status = 'success' AND updated_at < ?", settled_before))
            # Replies whose requester is gone: no one will ever claim them.
            parts.append(
                (
                    "status IN ('pending', 'retry_ready') AND created_at < ? "
                    "AND json_extract(payload, '$.cuemsg.kind') IN ('reply', 'error')",
                    settled_before,
                )
            )
        if dead_before is not None:
            parts.append(("status IN ('failed', 'missed') AND updated_at < ?", dead_before))
        if not parts:
            return 0
        # Rows are in `seq` order of creation, and a row settled before a time was
        # made before it: walk windows of seq from the oldest row up to the first
        # row made after the latest cutoff, one short transaction per window, so
        # requests are served between windows and new rows are never scanned.
        cutoff = max(before for _, before in parts)
        gone = 0
        start = self.db.execute("SELECT min(seq) FROM executions").fetchone()[0]
        while start is not None:
            end = start + _PURGE_WINDOW
            with self._tx() as db:
                for where, before in parts:
                    gone += db.execute(
                        f"DELETE FROM executions WHERE seq >= ? AND seq < ? AND {where}",
                        (start, end, before),
                    ).rowcount
            following = self.db.execute(
                "SELECT seq, created_at FROM executions WHERE seq >= ? ORDER BY seq LIMIT 1",
                (end,),
            ).fetchone()
            if following is None or following[1] >= cutoff:
                break
            start = following[0]
            await asyncio.sleep(0)
        return gone
