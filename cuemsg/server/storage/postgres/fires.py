"""Firing on PostgreSQL: one fire in two statements (the common case), and the
general path (batches, repeats, races) in one transaction, with the
idempotency keys that make a repeated fire return its first execution.

A fire hands its new work to a claim parked on this replica (`Notifier.taker`):
the one-fire statement inserts the execution already claimed for it, the
general path claims it in its transaction. The claim then answers without a
claim statement of its own. Other replicas hear of the fire by NOTIFY.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from psycopg import AsyncConnection

from cuemsg.server.errors import cue_not_found
from cuemsg.server.notify import Handoff, Waiter
from cuemsg.server.storage.base import (
    IDEMPOTENCY_TTL,
    ExecutionRow,
    NewFire,
    execution_from_row,
    hand_outs,
    idempotency_conflict,
    new_execution,
    new_execution_id,
    new_execution_ids,
)
from cuemsg.server.storage.postgres.connection import PostgresConnection
from cuemsg.server.storage.postgres.statements import (
    CLAIM_SET,
    EXEC_COLS,
    cue_from_doc,
    encode_json,
)

#: A waiter a fire took, and what it claimed for it (handed after the commit).
Handed = tuple[Waiter, list[ExecutionRow]]
#: (tenant, task, how many executions are claimable) to wake, here and on other replicas.
Wake = list[tuple[str, str | None, int]]
T = TypeVar("T")


def claimed_for(execution: ExecutionRow, taking: Handoff, now: float, size: int) -> ExecutionRow:
    """`execution` as inserted already claimed for the parked claim `taking`."""
    return msgspec.structs.replace(
        execution,
        status="delivering",
        attempts=1,
        claimed_by_worker=taking.worker_id,
        claimed_at=now,
        lease_expires_at=now + taking.lease_seconds,
        size=size,
    )


class PostgresFires(PostgresConnection):
    """The fire statements, on top of the connection layer."""

    async def fire(self, tenant_id: str, fires: list[NewFire], now: float) -> list[ExecutionRow]:
        if len(fires) == 1:
            done = await self._fire_one(tenant_id, fires[0], now)
            if done is not None:
                return [done]
        return await self._fire_many(tenant_id, fires, now)

    async def _fire_one(self, tenant_id: str, fire: NewFire, now: float) -> ExecutionRow | None:
        """One fire in two statements, no transaction: the common case made cheap.

        None hands over to `_fire_many` (the general path) for the rare cases:
        a repeated key whose execution is gone, or a key fired concurrently
        between our two statements.
        """
        key = fire.idempotency_key
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT c.doc, c.fired_count, c.last_run, i.body_hash, i.execution_id "
                "FROM cuemsg_cues c LEFT JOIN cuemsg_idempotency i ON i.tenant_id = c.tenant_id "
                "AND i.cue_id = c.id AND i.key = %s AND i.created_at > %s "
                "WHERE c.id = %s AND c.tenant_id = %s",
                (key, now - IDEMPOTENCY_TTL, fire.cue_id, tenant_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise cue_not_found(fire.cue_id)
            if row[3] is not None:  # a live key: a repeat (or a conflict)
                assert key is not None
                if row[3] != (fire.body_hash or ""):
                    raise idempotency_conflict(key, 0, 1)
                cur = await conn.execute(
                    f"SELECT {EXEC_COLS} FROM cuemsg_executions WHERE id = %s", (row[4],)
                )
                first = await cur.fetchone()
                return execution_from_row(first) if first is not None else None
            cue = cue_from_doc(row[0], row[1], row[2])
            execution = new_execution(tenant_id, cue, fire, new_execution_id(), now)
            wake = execution.scheduled_for <= now and execution.transport == "worker"
            payload = encode_json(execution.payload).decode()
            # A claim parked here for this task takes the execution as it is inserted.
            waiter = self.notifier.taker(tenant_id, execution.task) if wake else None
            taking = waiter.handoff if waiter is not None else None
            try:
                counts = await self._insert_one(
                    conn, tenant_id, cue.id, fire, execution, payload, now, wake, taking
                )
            except BaseException:
                if waiter is not None:
                    waiter.hand([])  # nothing was claimed for it: it claims as usual
                raise
        if counts is None or counts[0] == 0:
            if waiter is not None:
                waiter.hand([])
            return None  # lost a race for the key: the general path sorts it out
        if waiter is not None and taking is not None:
            waiter.hand([claimed_for(execution, taking, now, len(payload))])
            self.notifier.notify(tenant_id, execution.task, 0)  # agent waiters, streams
        elif wake:
            self.notifier.notify(tenant_id, execution.task)
        return execution

    async def _insert_one(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        cue_id: str,
        fire: NewFire,
        execution: ExecutionRow,
        payload: str,
        now: float,
        wake: bool,
        taking: Handoff | None,
    ) -> tuple[Any, ...] | None:
        """The key, the execution (claimed for `taking`, if given), the cue's counters
        and the NOTIFY in one statement; (executions inserted, cues updated, notes)."""
        key = fire.idempotency_key
        worker = taking.worker_id if taking is not None else None
        # One statement is one transaction: the key, the execution, the cue's
        # counters and the NOTIFY (sent at commit) all happen, or none does.
        # If another fire took the key since our SELECT, nothing is inserted.
        # A handed execution is fired, then claimed: two stamps, in that order.
        cur = await conn.execute(
            "WITH idem AS ("
            "INSERT INTO cuemsg_idempotency AS i "
            "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
            "SELECT %(t)s, %(cue)s, %(key)s::text, %(hash)s, %(id)s, %(now)s "
            "WHERE %(key)s::text IS NOT NULL "
            "ON CONFLICT (tenant_id, cue_id, key) DO UPDATE SET "
            "body_hash = excluded.body_hash, execution_id = excluded.execution_id, "
            "created_at = excluded.created_at WHERE i.created_at <= %(expired)s "
            "RETURNING 1), "
            "ins AS ("
            "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, "
            "payload, transport, triggered_by, scheduled_for, created_at, updated_at, "
            "attempts, max_attempts, claimed_by_worker, claimed_at, lease_expires_at, "
            "fired_seq, claimed_seq) "
            "SELECT %(id)s, %(t)s, %(cue)s, %(status)s, %(task)s, %(agent)s, "
            "%(payload)s::jsonb, %(transport)s, 'manual_fire', %(at)s, %(now)s, %(now)s, "
            "%(attempts)s, %(max)s, %(worker)s, %(claimed_at)s, %(lease)s, "
            "f.seq, CASE WHEN %(worker)s::text IS NULL THEN NULL "
            "ELSE cuemsg_next_event() END "
            "FROM (SELECT cuemsg_next_event() AS seq) f "
            "WHERE %(key)s::text IS NULL OR EXISTS (SELECT 1 FROM idem) "
            "RETURNING cue_id), "
            "upd AS (UPDATE cuemsg_cues SET fired_count = fired_count + 1, "
            "last_run = %(now)s WHERE id IN (SELECT cue_id FROM ins) RETURNING 1) "
            "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd), "
            "(SELECT count(*) FROM (SELECT pg_notify(%(channel)s, %(note)s) FROM ins "
            "WHERE %(wake)s) AS n)",
            {
                "t": tenant_id,
                "cue": cue_id,
                "key": key,
                "hash": fire.body_hash or "",
                "id": execution.id,
                "now": now,
                "expired": now - IDEMPOTENCY_TTL,
                "task": execution.task,
                "agent": execution.agent,
                "payload": payload,
                "transport": execution.transport,
                "at": execution.scheduled_for,
                "max": execution.max_attempts,
                "channel": self.channel,
                # a handed execution is not claimable: the note still wakes other
                # replicas' event streams and agent-filtered claims
                "note": self._payloads([(tenant_id, execution.task, int(worker is None))])[0],
                "wake": wake,
                "status": "pending" if worker is None else "delivering",
                "attempts": int(worker is not None),
                "worker": worker,
                "claimed_at": now if worker is not None else None,
                "lease": now + taking.lease_seconds if taking is not None else None,
            },
        )
        return await cur.fetchone()

    async def _fire_many(
        self, tenant_id: str, fires: list[NewFire], now: float
    ) -> list[ExecutionRow]:
        """Any number of fires in one transaction (all or none)."""
        return await self._firing(
            lambda conn, handed: self._fire_in(conn, tenant_id, fires, now, handed)
        )

    async def _firing(
        self, work: Callable[[AsyncConnection[Any], list[Handed]], Awaitable[tuple[T, Wake]]]
    ) -> T:
        """Run `work` (fires, with their hand-overs) in one transaction; after the
        commit, hand the taken claims their work and wake the rest."""
        handed: list[Handed] = []
        try:
            async with self._tx() as conn:
                result, wake = await work(conn, handed)
        except BaseException:
            for waiter, _ in handed:  # nothing was claimed for them: they claim as usual
                waiter.hand([])
            raise
        for waiter, rows in handed:
            waiter.hand(rows)
        self._wake(wake)
        return result

    def _wake(self, wake: Wake) -> None:
        """After the commit: wake this replica's claims waiting for these tasks."""
        for tenant, task, count in wake:
            self.notifier.notify(tenant, task, count)

    async def _fire_in(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        fires: list[NewFire],
        now: float,
        handed: list[Handed],
    ) -> tuple[list[ExecutionRow], Wake]:
        """The fires inside the caller's transaction, with their hand-overs (added to
        `handed`): (answers in order, the tasks to wake, as notified to other replicas)."""
        cue_ids = list(dict.fromkeys(f.cue_id for f in fires))
        cur = await conn.execute(
            "SELECT doc, fired_count, last_run FROM cuemsg_cues "
            "WHERE tenant_id = %s AND id = ANY(%s)",
            (tenant_id, cue_ids),
        )
        cues = {cue.id: cue for cue in (cue_from_doc(*r) for r in await cur.fetchall())}
        # Fires before the first unknown cue are still checked in order, so a
        # conflict earlier in a batch wins over a 404 later in it (as in SQLite).
        missing = next((i for i, f in enumerate(fires) if f.cue_id not in cues), len(fires))
        valid = fires[:missing]

        ids = new_execution_ids(len(valid))
        # Claim each idempotency key once (its first use in the batch leads).
        leaders: dict[tuple[str, str], int] = {}
        for i, f in enumerate(valid):
            if f.idempotency_key is not None:
                leaders.setdefault((f.cue_id, f.idempotency_key), i)
        stored: dict[tuple[str, str], tuple[str, str]] = {}  # key -> (body_hash, exec id)
        owned: set[tuple[str, str]] = set()
        if leaders:
            order = sorted(leaders)  # a fixed lock order: concurrent batches never deadlock
            cur = await conn.execute(
                "INSERT INTO cuemsg_idempotency AS i "
                "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
                "SELECT %s, u.cue_id, u.key, u.body_hash, u.execution_id, %s "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                "AS u(cue_id, key, body_hash, execution_id) "
                # An expired key is taken over; a live one is left as it is.
                "ON CONFLICT (tenant_id, cue_id, key) DO UPDATE SET "
                "body_hash = excluded.body_hash, execution_id = excluded.execution_id, "
                "created_at = excluded.created_at WHERE i.created_at <= %s "
                "RETURNING cue_id, key",
                (
                    tenant_id,
                    now,
                    [k[0] for k in order],
                    [k[1] for k in order],
                    [valid[leaders[k]].body_hash or "" for k in order],
                    [ids[leaders[k]] for k in order],
                    now - IDEMPOTENCY_TTL,
                ),
            )
            owned = {(r[0], r[1]) for r in await cur.fetchall()}
            seen = [k for k in order if k not in owned]
            if seen:
                cur = await conn.execute(
                    "SELECT cue_id, key, body_hash, execution_id FROM cuemsg_idempotency "
                    "WHERE tenant_id = %s AND (cue_id, key) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                    (tenant_id, [k[0] for k in seen], [k[1] for k in seen]),
                )
                stored = {(r[0], r[1]): (r[2], r[3]) for r in await cur.fetchall()}
            for k in owned:
                stored[k] = (valid[leaders[k]].body_hash or "", ids[leaders[k]])

        earlier: dict[str, ExecutionRow] = {}
        wanted = [v[1] for k, v in stored.items() if k not in owned]
        if wanted:
            cur = await conn.execute(
                f"SELECT {EXEC_COLS} FROM cuemsg_executions WHERE id = ANY(%s)",
                (wanted,),
            )
            earlier = {r[0]: execution_from_row(r) for r in await cur.fetchall()}

        out: list[ExecutionRow] = []
        created: list[ExecutionRow] = []
        for i, f in enumerate(valid):
            key = (f.cue_id, f.idempotency_key) if f.idempotency_key is not None else None
            if key is not None and key in stored:
                body_hash, first_id = stored[key]
                if body_hash != (f.body_hash or ""):
                    assert f.idempotency_key is not None
                    raise idempotency_conflict(f.idempotency_key, i, len(fires))
                # A repeat within this batch finds the execution its leader made.
                first = earlier.get(first_id)
                if first is not None:
                    out.append(first)
                    continue
            execution = new_execution(tenant_id, cues[f.cue_id], f, ids[i], now)
            if key is not None and key not in owned:
                # The key's first execution is gone: this fire takes its place.
                await conn.execute(
                    "INSERT INTO cuemsg_idempotency "
                    "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, cue_id, key) "
                    "DO UPDATE SET body_hash = excluded.body_hash, "
                    "execution_id = excluded.execution_id, created_at = excluded.created_at",
                    (tenant_id, key[0], key[1], f.body_hash or "", execution.id, now),
                )
                owned.add(key)
                stored[key] = (f.body_hash or "", execution.id)
            earlier[execution.id] = execution
            out.append(execution)
            created.append(execution)
        if missing < len(fires):
            problem = cue_not_found(fires[missing].cue_id)
            if len(fires) > 1:
                problem.field = f"fires[{missing}].cue_id"
            raise problem

        if created:
            await self._insert(conn, tenant_id, created, now)
            counts: dict[str, int] = {}
            for e in created:
                counts[e.cue_id] = counts.get(e.cue_id, 0) + 1
            for cue_id in sorted(counts):  # a fixed lock order again
                await conn.execute(
                    "UPDATE cuemsg_cues SET fired_count = fired_count + %s, last_run = %s "
                    "WHERE id = %s",
                    (counts[cue_id], now, cue_id),
                )
                cues[cue_id].fired_count += counts[cue_id]
                cues[cue_id].last_run = now
        wake = await self._hand_over(conn, tenant_id, created, now, handed)
        if wake:
            await self._publish(conn, wake)
        return out, wake

    async def _hand_over(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        created: list[ExecutionRow],
        now: float,
        handed: list[Handed],
    ) -> Wake:
        """Claim new executions for this replica's parked claims in the fire's
        transaction (each up to its limit, oldest claim first, in the order fired).
        Returns the tasks to wake with how many are left claimable (0 where all
        were handed: agent-filtered claims and event streams still hear of them)."""
        left: dict[str | None, int] = {}  # claimable now, by task, until handed
        for e in created:
            if e.scheduled_for <= now and e.transport == "worker":
                left[e.task] = left.get(e.task, 0) + 1
        for waiter, taking, batch in hand_outs(self.notifier, tenant_id, created, now):
            handed.append((waiter, []))  # before the claim: woken if anything fails
            cur = await conn.execute(
                f"UPDATE cuemsg_executions e SET {CLAIM_SET} WHERE e.id = ANY(%s) "
                f"RETURNING {EXEC_COLS}, e.seq",
                (taking.worker_id, now, now + taking.lease_seconds, now, [e.id for e in batch]),
            )
            rows = sorted(await cur.fetchall(), key=lambda r: r[-1])  # as fired
            handed[-1] = (waiter, [execution_from_row(r) for r in rows])
            left[batch[0].task] -= len(batch)
        return [(tenant_id, task, count) for task, count in left.items()]

    @staticmethod
    async def _insert(
        conn: AsyncConnection[Any], tenant_id: str, created: list[ExecutionRow], now: float
    ) -> None:
        # One statement for the whole batch; WITH ORDINALITY + ORDER BY keeps
        # `seq` (the tie-break of the claim order) in fire order.
        await conn.execute(
            "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, payload, "
            "transport, triggered_by, scheduled_for, created_at, updated_at, attempts, "
            "max_attempts) "
            "SELECT u.id, %s, u.cue_id, 'pending', u.task, u.agent, u.payload::jsonb, "
            "u.transport, 'manual_fire', u.scheduled_for, %s, %s, 0, u.max_attempts "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::float8[], %s::int[]) WITH ORDINALITY "
            "AS u(id, cue_id, task, agent, payload, transport, scheduled_for, max_attempts, n) "
            "ORDER BY u.n",
            (
                tenant_id,
                now,
                now,
                [e.id for e in created],
                [e.cue_id for e in created],
                [e.task for e in created],
                [e.agent for e in created],
                [encode_json(e.payload).decode() for e in created],
                [e.transport for e in created],
                [e.scheduled_for for e in created],
                [e.max_attempts for e in created],
            ),
        )
