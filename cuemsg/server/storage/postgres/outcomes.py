"""Outcomes on PostgreSQL: one (a conditional `UPDATE` on the happy path), a
batch (its rows locked in id order, then one `UPDATE ... FROM unnest(...)`),
one with its reply fired in the same transaction, and a batch carried by a
claim (`settle_and_claim`: the outcomes and the claim in one transaction).

Only an item the guarded update did not match is read again, under its row
lock, to answer with the exact error.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from cuemsg.server.errors import ApiProblem, execution_not_found
from cuemsg.server.storage.base import (
    ExecutionRow,
    NewFire,
    OutcomeRecord,
    check_lease,
    claimable_where,
    execution_from_row,
    name_reply,
    outcome_already_recorded,
)
from cuemsg.server.storage.postgres.fires import Handed, Wake
from cuemsg.server.storage.postgres.statements import EXEC_COLS, claim_next_statement, encode_json
from cuemsg.server.storage.postgres.timed import PostgresTimed

_DONE_SET = (
    "status = v.vstatus, outcome = v.voutcome, updated_at = v.vat, lease_expires_at = NULL, "
    "done_seq = cuemsg_next_event()"
)
_RECORD = (
    "UPDATE cuemsg_executions SET status = %s, outcome = %s, updated_at = %s, "
    "lease_expires_at = NULL, done_seq = cuemsg_next_event() "
    "WHERE id = %s AND tenant_id = %s {} "
    f"RETURNING {EXEC_COLS}"
)


def _state(outcome: OutcomeRecord) -> str:
    return "success" if outcome.success else "failed"


def _guard(worker_id: str | None, prefix: str = "") -> str:
    guard = f"AND {prefix}status = 'delivering' AND {prefix}outcome IS NULL"
    return guard if worker_id is None else f"{guard} AND {prefix}claimed_by_worker = %s"


class PostgresOutcomes(PostgresTimed):
    """Recording outcomes, on top of firing (a reply) and the connection layer."""

    async def _locked(
        self, conn: AsyncConnection[Any], tenant_id: str, execution_id: str
    ) -> tuple[str, str | None, bool]:
        cur = await conn.execute(
            "SELECT status, claimed_by_worker, outcome IS NOT NULL FROM cuemsg_executions "
            "WHERE id = %s AND tenant_id = %s FOR UPDATE",
            (execution_id, tenant_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise execution_not_found(execution_id)
        return row[0], row[1], bool(row[2])

    async def _refusal(
        self, conn: AsyncConnection[Any], tenant_id: str, execution_id: str, worker_id: str | None
    ) -> None:
        """Raise why an outcome may not be recorded (nothing when it may)."""
        status, holder, recorded = await self._locked(conn, tenant_id, execution_id)
        if recorded:
            raise outcome_already_recorded(execution_id)
        check_lease(execution_id, status, holder, worker_id)

    async def _record(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        outcome: OutcomeRecord,
    ) -> ExecutionRow:
        args: list[Any] = [
            _state(outcome),
            encode_json(outcome).decode(),
            outcome.recorded_at,
            execution_id,
            tenant_id,
        ]
        # Happy path: the checks are the UPDATE's own condition (atomic under its row lock).
        guard = _guard(worker_id)
        cur = await conn.execute(
            _RECORD.format(guard), [*args, worker_id] if worker_id is not None else args
        )
        row = await cur.fetchone()
        if row is None:
            # Something is wrong: find out what under a row lock, and answer exactly
            # (a transaction of its own, or a savepoint in the caller's).
            async with conn.transaction():
                await self._refusal(conn, tenant_id, execution_id, worker_id)
                cur = await conn.execute(_RECORD.format(""), args)
                row = await cur.fetchone()
        assert row is not None
        return execution_from_row(row)

    async def record_outcome(
        self, tenant_id: str, execution_id: str, worker_id: str | None, outcome: OutcomeRecord
    ) -> ExecutionRow:
        async with self._conn() as conn:  # autocommit: one statement on the happy path
            return await self._record(conn, tenant_id, execution_id, worker_id, outcome)

    async def record_outcome_and_fire(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        outcome: OutcomeRecord,
        reply: NewFire,
        now: float,
    ) -> tuple[ExecutionRow, ExecutionRow]:

        async def work(
            conn: AsyncConnection[Any], handed: list[Handed]
        ) -> tuple[tuple[ExecutionRow, ExecutionRow], Wake]:
            # The row lock first: a refused outcome fires nothing, and a racing
            # outcome on the same execution waits for this commit.
            await self._refusal(conn, tenant_id, execution_id, worker_id)
            [fired], wake = await self._fire_in(conn, tenant_id, [reply], now, handed)
            named = name_reply(outcome, fired.id)
            cur = await conn.execute(
                _RECORD.format(""),
                (
                    _state(named),
                    encode_json(named).decode(),
                    named.recorded_at,
                    execution_id,
                    tenant_id,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            return (execution_from_row(row), fired), wake

        # A requester parked on this replica is handed the reply in this transaction.
        return await self._firing(work)

    async def record_outcomes(
        self, tenant_id: str, items: list[tuple[str, OutcomeRecord]], worker_id: str | None
    ) -> list[ExecutionRow | ApiProblem]:
        async with self._tx() as conn:  # one commit for the batch
            return await self._record_many(conn, tenant_id, items, worker_id)

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
        done = await self._settle_and_claim(
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
        return await self._settle_and_claim(
            tenant_id, worker_id, outcomes, task, agent, now, lease_seconds, limit, True
        )

    async def _settle_and_claim(
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
        where, args = claimable_where("%s", tenant_id, task, agent, now)
        async with self._tx() as conn:  # one commit (flushed: it holds outcomes)
            if only_if_claimable:
                cur = await conn.execute(
                    f"SELECT 1 FROM cuemsg_executions WHERE {where} LIMIT 1", args
                )
                if await cur.fetchone() is None:
                    return None
            settled = await self._record_many(conn, tenant_id, outcomes, worker_id)
            cur = await conn.execute(
                claim_next_statement(where, relaxed=False),
                [*args, limit, worker_id, now, now + lease_seconds, now],
            )
            rows = await cur.fetchall()
        rows.sort(key=lambda r: (r[9], r[-1]))  # RETURNING has no order: oldest first
        return settled, [execution_from_row(r) for r in rows]

    async def _record_many(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        items: list[tuple[str, OutcomeRecord]],
        worker_id: str | None,
    ) -> list[ExecutionRow | ApiProblem]:
        """Outcomes inside the caller's transaction, each on its own (its error in
        its place): the rows locked in id order (two batches over the same rows
        cannot deadlock), one statement for those whose lease is open, then the
        rest one by one (a repeated id in the batch finds the first recorded)."""
        done: dict[str, ExecutionRow] = {}
        if len(items) > 1:
            first = dict(reversed(items))  # each id's first item in the batch
            ids = sorted(first)
            await conn.execute(
                "SELECT 1 FROM cuemsg_executions WHERE tenant_id = %s AND id = ANY(%s) "
                "ORDER BY id FOR UPDATE",
                (tenant_id, ids),
            )
            args: list[Any] = [
                ids,
                [_state(first[i]) for i in ids],
                [encode_json(first[i]).decode() for i in ids],
                [first[i].recorded_at for i in ids],
                tenant_id,
            ]
            if worker_id is not None:
                args.append(worker_id)
            cur = await conn.execute(
                f"UPDATE cuemsg_executions e SET {_DONE_SET} "
                "FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::float8[]) "
                "AS v(vid, vstatus, voutcome, vat) "
                f"WHERE e.id = v.vid AND e.tenant_id = %s {_guard(worker_id, 'e.')} "
                f"RETURNING {EXEC_COLS}",
                args,
            )
            done = {r[0]: execution_from_row(r) for r in await cur.fetchall()}
        results: list[ExecutionRow | ApiProblem] = []
        for execution_id, outcome in items:
            row = done.pop(execution_id, None)  # popped: a repeat of the id is refused below
            if row is not None:
                results.append(row)
                continue
            try:
                results.append(
                    await self._record(conn, tenant_id, execution_id, worker_id, outcome)
                )
            except ApiProblem as problem:
                results.append(problem)
        return results
