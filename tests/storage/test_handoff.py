"""A fire claims its new execution for a parked claim in its own transaction (or,
for one fire on PostgreSQL, its one statement), called directly on every backend."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from cuemsg.server.errors import ApiProblem
from cuemsg.server.feed import events_of
from cuemsg.server.notify import Handoff
from cuemsg.server.storage.base import ExecutionRow, OutcomeRecord, Storage
from cuemsg.server.storage.sqlite import SQLiteStorage
from tests.storage.helpers import T0, make_cue, new_fire, opened, parked, problem_of, tenant

pytestmark = pytest.mark.anyio


async def test_a_fire_claims_for_the_oldest_waiter_that_takes_handed_work(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        first = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0))
        second = await parked(s.notifier, t, "t", handoff=Handoff("w2", 30.0))
        [fired] = await s.fire(t, [new_fire(cue.id)], T0)
        assert fired.status == "pending"  # the fire's answer: as it was made
        assert first.woken and not second.woken
        stored = await s.get_execution(t, fired.id)
        assert stored is not None
        assert first.handed is not None
        [handed] = first.handed
        assert (handed.id, handed.status, handed.claimed_by_worker) == (
            fired.id,
            "delivering",
            "w1",
        )
        assert handed.attempts == 1 and handed.lease_expires_at == T0 + 30
        assert handed.claimed_at == T0 and handed.payload == stored.payload
        # what the claim was handed is what is stored
        assert (stored.status, stored.claimed_by_worker, stored.attempts) == ("delivering", "w1", 1)
        assert (stored.claimed_at, stored.lease_expires_at) == (T0, T0 + 30)
        assert s.notifier.handed == 1 and s.notifier.waiting() == 1
        # nothing is left to claim, and its outcome goes in on the handed lease
        assert await _claim(s, t, "t") == []
        done = await s.record_outcome(
            t, fired.id, "w1", OutcomeRecord(success=True, recorded_at=T0)
        )
        assert done.status == "success"
        second.close()


async def test_a_handed_execution_is_fired_then_claimed_in_the_feed(db_url: str) -> None:
    """The feed stamps a handed execution twice, fired before claimed, as if it were
    claimed after its fire (on PostgreSQL one statement makes both stamps)."""
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        waiter = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0))
        [fired] = await s.fire(t, [new_fire(cue.id)], T0)
        assert waiter.handed is not None
        batch = await s.read_events(t, 0, cue_id=None, limit=10)
        events = events_of(batch.rows, after=0, upto=batch.upto, thread=None)
        assert [(ev.type, ev.execution_id) for ev in events] == [
            ("fired", fired.id),
            ("claimed", fired.id),
        ]
        assert events[0].seq < events[1].seq <= batch.upto


async def test_a_batch_hands_one_execution_to_each_waiter_then_wakes_the_rest(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        takers = [
            await parked(s.notifier, t, "t", handoff=Handoff(f"w{i}", 30.0)) for i in range(2)
        ]
        plain = await parked(s.notifier, t, "t")  # takes no handed work: woken as usual
        fired = await s.fire(t, [new_fire(cue.id) for _ in range(4)], T0)
        assert all(w.woken for w in [*takers, plain])
        handed = [w.handed[0].id for w in takers if w.handed is not None]
        assert handed == [fired[0].id, fired[1].id] and plain.handed is None
        left = await s.claim_next(t, "w9", task="t", agent=None, now=T0, lease_seconds=9, limit=9)
        assert [e.id for e in left] == [fired[2].id, fired[3].id]


async def test_a_waiter_taking_many_is_handed_up_to_its_limit_in_the_order_fired(
    db_url: str,
) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        many = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0, limit=3))
        one = await parked(s.notifier, t, "t", handoff=Handoff("w2", 30.0))
        fired = await s.fire(t, [new_fire(cue.id) for _ in range(5)], T0)
        assert many.handed is not None and one.handed is not None
        assert [e.id for e in many.handed] == [e.id for e in fired[:3]]
        assert [e.id for e in one.handed] == [fired[3].id]
        assert {e.claimed_by_worker for e in many.handed} == {"w1"}
        assert s.notifier.handed == 4
        left = await s.claim_next(t, "w9", task="t", agent=None, now=T0, lease_seconds=9, limit=9)
        assert [e.id for e in left] == [fired[4].id]


async def test_what_is_not_claimable_now_and_agent_waiters_are_not_handed(
    db_url: str,
) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        later = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0))
        await s.fire(t, [new_fire(cue.id, at=T0 + 60)], T0)  # due in a minute
        assert not later.woken and later.handed is None
        later.close()
        agent = await parked(s.notifier, t, "t", agent="a1", handoff=Handoff("w2", 30.0))
        [fired] = await s.fire(t, [new_fire(cue.id)], T0)
        assert agent.woken and agent.handed is None  # it claims for itself, filtered
        stored = await s.get_execution(t, fired.id)
        assert stored is not None and stored.status == "pending"


async def test_a_fire_that_fails_after_the_hand_over_claims_and_records_nothing(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault: a transaction that fails after the hand-over (a full disk at COMMIT,
    # say) cannot be made to happen on demand; the hand-over is wrapped to fail
    # right after it ran, inside the fire's transaction.
    async with opened(str(tmp_path / "cuemsg.db")) as s:
        assert isinstance(s, SQLiteStorage)
        t = await tenant(s)
        cue = await make_cue(s, t)
        [held] = await s.fire(t, [new_fire(cue.id)], T0)
        await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=30, limit=1)
        carried = ((held.id, OutcomeRecord(success=True, recorded_at=T0)),)
        waiter = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0, settle=carried))
        hand_over = s._hand_over

        def failing(*args: Any) -> None:
            hand_over(*args)
            handed: list[tuple[Any, list[ExecutionRow], Any]] = args[-1]
            assert len(handed) == 1 and handed[0][2] is not None  # it did, in the transaction
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(s, "_hand_over", failing)
        with pytest.raises(sqlite3.OperationalError):
            await s.fire(t, [new_fire(cue.id)], T0)
        # The claim and the outcome rolled back with the fire; the waiter was woken to
        # claim (and record its outcomes) as usual.
        assert waiter.woken and waiter.handed is None and waiter.settled is None
        assert s.notifier.handed == 0 and s.notifier.settled == [0, 0]
        stored = await s.get_execution(t, held.id)
        assert stored is not None and stored.status == "delivering" and stored.outcome is None
        monkeypatch.undo()
        assert (
            await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=9, limit=9)
            == []
        )


async def test_a_fire_the_database_refuses_hands_nothing_over(db_url: str) -> None:
    """A fire that fails after it took a parked claim (here a NUL character, which
    PostgreSQL cannot store and SQLite can) wakes the claim to claim as usual."""
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        waiter = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0))
        bad = new_fire(cue.id, payload_override={"message": "a\x00b"})
        if not db_url.startswith("postgresql"):
            await s.fire(t, [bad], T0)
            assert waiter.handed is not None  # SQLite stores it: handed as usual
            return
        problem = await problem_of(s.fire(t, [bad], T0))
        assert problem.status == 422
        assert waiter.woken and waiter.handed is None and s.notifier.handed == 0
        assert s.notifier.waiting() == 0  # taken, then woken: its handler claims itself
        assert await _claim(s, t, "t") == []  # nothing was stored, claimed or not
        [good] = await s.fire(t, [new_fire(cue.id)], T0)
        assert (await _claim(s, t, "t"))[0].id == good.id


async def test_the_outcomes_a_waiter_carries_are_recorded_with_its_hand_over(
    tmp_path: Any,
) -> None:
    """A parked claim's outcomes ride on the hand-over: the fire records them, claims
    for the claim and inserts its execution in one transaction (one BEGIN, one COMMIT)."""
    async with opened(str(tmp_path / "cuemsg.db")) as s:
        assert isinstance(s, SQLiteStorage)
        t = await tenant(s)
        cue = await make_cue(s, t)
        done, other = await s.fire(t, [new_fire(cue.id), new_fire(cue.id)], T0)
        await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=30, limit=1)
        await s.claim_next(t, "w2", task="t", agent=None, now=T0, lease_seconds=30, limit=1)
        carried = (
            (done.id, OutcomeRecord(success=True, result="ok", recorded_at=T0 + 1)),
            (other.id, OutcomeRecord(success=True, recorded_at=T0 + 1)),  # w2's lease: 403
        )
        waiter = await parked(s.notifier, t, "t", handoff=Handoff("w1", 30.0, settle=carried))
        statements: list[str] = []
        s.db.set_trace_callback(statements.append)
        try:
            [fired] = await s.fire(t, [new_fire(cue.id)], T0 + 2)
        finally:
            s.db.set_trace_callback(None)
        assert [q for q in statements if q in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        assert waiter.handed is not None and [e.id for e in waiter.handed] == [fired.id]
        assert waiter.settled is not None
        recorded, refused = waiter.settled
        assert isinstance(recorded, ExecutionRow) and recorded.status == "success"
        assert isinstance(refused, ApiProblem) and refused.code == "not_execution_owner"
        assert s.notifier.settled == [0, 1]  # counted for /metrics: one succeeded
        stored = await s.get_execution(t, done.id)
        assert stored is not None and stored.outcome is not None
        assert stored.outcome.result == "ok"


async def test_a_reply_fired_with_an_outcome_is_handed_to_the_parked_requester(
    db_url: str,
) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        requests, replies = await make_cue(s, t), await make_cue(s, t, task="replies")
        [request] = await s.fire(t, [new_fire(requests.id)], T0)
        await s.claim_next(t, "responder", task="t", agent=None, now=T0, lease_seconds=9, limit=1)
        requester = await parked(s.notifier, t, "replies", handoff=Handoff("requester", 30.0))
        outcome = OutcomeRecord(success=True, recorded_at=T0 + 1)
        settled, reply = await s.record_outcome_and_fire(
            t, request.id, "responder", outcome, new_fire(replies.id), T0 + 1
        )
        assert settled.status == "success" and requester.woken
        assert requester.handed is not None
        assert [(e.id, e.claimed_by_worker) for e in requester.handed] == [(reply.id, "requester")]


async def test_a_claim_that_finds_nothing_takes_no_write_lock(tmp_path: Any) -> None:
    """SQLite: a claim reads before it takes the write lock, so one that finds nothing
    (a long-poll about to park) neither waits for another writer nor commits; one that
    finds work still claims it in its transaction."""
    path = str(tmp_path / "probe.db")
    async with opened(path) as s:
        assert isinstance(s, SQLiteStorage)
        t = await tenant(s)
        cue = await make_cue(s, t)
        [fired] = await s.fire(t, [new_fire(cue.id)], T0)
        s.db.execute("PRAGMA busy_timeout=0")  # waiting for the lock would fail at once
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            assert await _claim(s, t, "nothing-here") == []
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await _claim(s, t, "t")  # work: the lock is needed
        finally:
            other.execute("ROLLBACK")
            other.close()
        [claimed] = await _claim(s, t, "t")
        assert claimed.id == fired.id and claimed.status == "delivering"


async def _claim(s: Storage, tenant_id: str, task: str) -> list[ExecutionRow]:
    return await s.claim_next(
        tenant_id, "w", task=task, agent=None, now=T0, lease_seconds=30.0, limit=1
    )
