"""The SQLite statements of leases: claims (by id, the next ones, and the ones a
fire makes for parked claims, `_hand_over`), heartbeats, outcomes (one, a
batch, and a batch carried by a claim, `settle_and_claim`).
Mixed into `SQLiteStorage` (see `Storage` for each method).

An outcome is one guarded `UPDATE` on the happy path (a batch: one `UPDATE ...
FROM (VALUES ...)` for all its items); only an item it did not match is read
again, to answer with the exact error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import msgspec

from cuemsg.server.errors import ApiProblem, execution_not_found, not_claimable
from cuemsg.server.notify import Notifier, Waiter
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    ExecutionRow,
    OutcomeRecord,
    check_lease,
    claimable_condition,
    claimable_where,
    execution_from_row,
    hand_outs,
    outcome_already_recorded,
)
from cuemsg.server.storage.sqlite_schema import READY

_EXEC_COLS = EXECUTION_COLUMNS
_CLAIMABLE = claimable_condition("?")
_CLAIM_SET = (
    "status = 'delivering', attempts = attempts + 1, claimed_by_worker = ?, claimed_at = ?, "
    "lease_expires_at = ?, updated_at = ?, claimed_seq = cuemsg_next_event()"
)
_DONE_SET = (
    "status = {}, outcome = {}, updated_at = {}, lease_expires_at = NULL, "
    "done_seq = cuemsg_next_event()"
)
# An outcome may be recorded only on an open lease (and the caller's, when it names itself).
_OPEN = "status = 'delivering' AND outcome IS NULL"
#: Items of a batch per statement (4 parameters each, far below SQLite's limit).
_CHUNK = 500
_DONE_MANY = _DONE_SET.format("v.vstatus", "v.voutcome", "v.vat")

_encode = msgspec.json.Encoder().encode


#: A waiter a fire handed work to: what it claimed, and the carried outcomes as recorded.
Handed = tuple[Waiter, list[ExecutionRow], "list[ExecutionRow | ApiProblem] | None"]


def _state(outcome: OutcomeRecord) -> str:
    return "success" if outcome.success else "failed"


class SQLiteLeases:
    """Claims, heartbeats and outcomes on SQLite."""

    #: A fire claims work for a parked claim in its own transaction (`_hand_over`).
    hands_over = True
    #: ... with the outcomes the claim carries (`claim.settle`) recorded in it too.
    settle_rides = True
    # Defined by SQLiteStorage.
    notifier: Notifier
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    if TYPE_CHECKING:  # SQLiteStorage's property

        @property
        def db(self) -> sqlite3.Connection: ...

    async def claim(
        self, tenant_id: str, execution_id: str, worker_id: str, now: float, lease_seconds: float
    ) -> ExecutionRow:
        with self._tx() as db:
            row = db.execute(
                f"UPDATE executions SET {_CLAIM_SET} "
                f"WHERE id = ? AND tenant_id = ? AND {_CLAIMABLE} RETURNING {_EXEC_COLS}",
                (worker_id, now, now + lease_seconds, now, execution_id, tenant_id, now),
            ).fetchone()
            if row is None:
                exists = db.execute(
                    "SELECT 1 FROM executions WHERE id = ? AND tenant_id = ?",
                    (execution_id, tenant_id),
                ).fetchone()
                if exists is None:
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
        where, args = claimable_where("?", tenant_id, task, agent, now)
        # A read first: a claim that finds nothing (a parking long-poll, an RPC's reply
        # claim) takes no write lock and commits nothing, ~5 x cheaper here. Nothing
        # runs between this read and the claim's transaction: the storage is this
        # thread's, and the server is the file's only writer of executions.
        if not self._claimable(where, args):
            return []
        with self._tx() as db:
            return self._claim_next_in(
                db, tenant_id, worker_id, task, agent, now, lease_seconds, limit
            )

    def _claimable(self, where: str, args: list[Any]) -> bool:
        query = f"SELECT 1 FROM {READY} WHERE {where} LIMIT 1"
        return bool(self.db.execute(query, args).fetchall())

    async def settle_and_claim(
        self,
        tenant_id: str,
        worker_id: str,
        outcomes: list[tuple[str, OutcomeRecord]],
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> tuple[list[ExecutionRow | ApiProblem], list[ExecutionRow]]:
        done = self._settle_and_claim(
            tenant_id, worker_id, outcomes, task, agent, now, lease_seconds, limit, False
        )
        assert done is not None  # None only when only claimable work is asked for
        return done

    async def settle_and_claim_if_claimable(
        self,
        tenant_id: str,
        worker_id: str,
        outcomes: list[tuple[str, OutcomeRecord]],
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> tuple[list[ExecutionRow | ApiProblem], list[ExecutionRow]] | None:
        return self._settle_and_claim(
            tenant_id, worker_id, outcomes, task, agent, now, lease_seconds, limit, True
        )

    def _settle_and_claim(
        self,
        tenant_id: str,
        worker_id: str,
        outcomes: list[tuple[str, OutcomeRecord]],
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
        only_if_claimable: bool,
    ) -> tuple[list[ExecutionRow | ApiProblem], list[ExecutionRow]] | None:
        with self._tx() as db:  # one commit for the outcomes and the claim
            # Read inside the write transaction: no lock of its own when work waits.
            if only_if_claimable and not self._claimable(
                *claimable_where("?", tenant_id, task, agent, now)
            ):
                return None  # commits nothing
            settled = self._record_many(db, tenant_id, outcomes, worker_id)
            claimed = self._claim_next_in(
                db, tenant_id, worker_id, task, agent, now, lease_seconds, limit
            )
        return settled, claimed

    def _hand_over(
        self,
        db: sqlite3.Connection,
        tenant_id: str,
        created: list[ExecutionRow],
        now: float,
        handed: list[Handed],
    ) -> None:
        """Claim new executions for parked claims that take handed work, in the fire's
        transaction (each waiter up to its limit, oldest waiter first, executions in
        the order fired), recording first the outcomes a waiter carries: one claim
        transaction less on the way to a waiting worker, and one settle less."""
        for waiter, taking, batch in hand_outs(self.notifier, tenant_id, created, now):
            handed.append((waiter, [], None))  # before the claim: woken if anything fails
            settled = (
                self._record_many(db, tenant_id, list(taking.settle), taking.worker_id)
                if taking.settle
                else None
            )
            marks = ", ".join("?" * len(batch))
            rows = db.execute(
                f"UPDATE executions SET {_CLAIM_SET} WHERE id IN ({marks}) "
                f"RETURNING {_EXEC_COLS}, seq",
                [taking.worker_id, now, now + taking.lease_seconds, now, *(e.id for e in batch)],
            ).fetchall()
            rows.sort(key=lambda r: r[-1])  # RETURNING gives no order: as fired
            handed[-1] = (waiter, [execution_from_row(r) for r in rows], settled)

    @staticmethod
    def _claim_next_in(
        db: sqlite3.Connection,
        tenant_id: str,
        worker_id: str,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> list[ExecutionRow]:
        where, args = claimable_where("?", tenant_id, task, agent, now)
        rows = db.execute(
            f"UPDATE executions SET {_CLAIM_SET} "
            f"WHERE seq IN (SELECT seq FROM {READY} WHERE {where} "
            f"ORDER BY scheduled_for, seq LIMIT ?) RETURNING {_EXEC_COLS}, seq",
            [worker_id, now, now + lease_seconds, now, *args, limit],
        ).fetchall()
        # RETURNING gives no order guarantee: restore oldest-first.
        rows.sort(key=lambda r: (r[9], r[-1]))
        return [execution_from_row(r) for r in rows]

    @staticmethod
    def _owned(
        db: sqlite3.Connection, tenant_id: str, execution_id: str
    ) -> tuple[str, str | None, str | None]:
        row = db.execute(
            "SELECT status, claimed_by_worker, outcome FROM executions "
            "WHERE id = ? AND tenant_id = ?",
            (execution_id, tenant_id),
        ).fetchone()
        if row is None:
            raise execution_not_found(execution_id)
        return row[0], row[1], row[2]

    async def heartbeat(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        now: float,
        lease_seconds: float,
    ) -> ExecutionRow:
        with self._tx() as db:
            status, holder, _ = self._owned(db, tenant_id, execution_id)
            check_lease(execution_id, status, holder, worker_id)
            row = db.execute(
                "UPDATE executions SET lease_expires_at = ?, updated_at = ? "
                f"WHERE id = ? RETURNING {_EXEC_COLS}",
                (now + lease_seconds, now, execution_id),
            ).fetchone()
        return execution_from_row(row)

    async def record_outcome(
        self, tenant_id: str, execution_id: str, worker_id: str | None, outcome: OutcomeRecord
    ) -> ExecutionRow:
        with self._tx() as db:
            return self._record(db, tenant_id, execution_id, worker_id, outcome)

    async def record_outcomes(
        self, tenant_id: str, items: list[tuple[str, OutcomeRecord]], worker_id: str | None
    ) -> list[ExecutionRow | ApiProblem]:
        with self._tx() as db:  # one commit for the batch; each item stands on its own
            return self._record_many(db, tenant_id, items, worker_id)

    def _check_open(
        self, db: sqlite3.Connection, tenant_id: str, execution_id: str, worker_id: str | None
    ) -> None:
        status, holder, recorded = self._owned(db, tenant_id, execution_id)
        if recorded is not None:
            raise outcome_already_recorded(execution_id)
        check_lease(execution_id, status, holder, worker_id)

    def _record(
        self,
        db: sqlite3.Connection,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        outcome: OutcomeRecord,
    ) -> ExecutionRow:
        """One outcome: the guarded update, or the exact error of the row it missed."""
        owner = "" if worker_id is None else " AND claimed_by_worker = ?"
        args: list[Any] = [_state(outcome), _encode(outcome), outcome.recorded_at]
        args += (
            [execution_id, tenant_id] if worker_id is None else [execution_id, tenant_id, worker_id]
        )
        row = db.execute(
            f"UPDATE executions SET {_DONE_SET.format('?', '?', '?')} "
            f"WHERE id = ? AND tenant_id = ? AND {_OPEN}{owner} RETURNING {_EXEC_COLS}",
            args,
        ).fetchone()
        if row is None:
            self._check_open(db, tenant_id, execution_id, worker_id)  # raises: says why
            raise AssertionError("an open lease the guarded update missed")  # pragma: no cover
        return execution_from_row(row)

    def _record_many(
        self,
        db: sqlite3.Connection,
        tenant_id: str,
        items: list[tuple[str, OutcomeRecord]],
        worker_id: str | None,
    ) -> list[ExecutionRow | ApiProblem]:
        """Outcomes inside the caller's transaction, each on its own (its error in
        its place): one statement for the items whose lease is open, then the
        rest one by one (a repeated id in the batch finds the first recorded)."""
        done: dict[str, ExecutionRow] = {}
        first = list(dict.fromkeys(eid for eid, _ in items))
        if len(items) > 1:
            outcomes = dict(reversed(items))  # an id's first item in the batch
            owner = "" if worker_id is None else " AND e.claimed_by_worker = ?"
            for start in range(0, len(first), _CHUNK):
                chunk = first[start : start + _CHUNK]
                args: list[Any] = []
                for eid in chunk:
                    outcome = outcomes[eid]
                    args += [eid, _state(outcome), _encode(outcome), outcome.recorded_at]
                args.append(tenant_id)
                if worker_id is not None:
                    args.append(worker_id)
                values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                rows = db.execute(
                    f"WITH v(vid, vstatus, voutcome, vat) AS (VALUES {values}) "
                    f"UPDATE executions AS e SET {_DONE_MANY} FROM v "
                    "WHERE e.id = v.vid AND e.tenant_id = ? AND e.status = 'delivering' "
                    f"AND e.outcome IS NULL{owner} RETURNING {_EXEC_COLS}",
                    args,
                ).fetchall()
                done.update((r[0], execution_from_row(r)) for r in rows)
        results: list[ExecutionRow | ApiProblem] = []
        for eid, outcome in items:
            row = done.pop(eid, None)  # popped: a repeat of the id is refused below
            if row is not None:
                results.append(row)
                continue
            try:
                results.append(self._record(db, tenant_id, eid, worker_id, outcome))
            except ApiProblem as problem:
                results.append(problem)
        return results
