"""The Storage interface, called directly, on every backend (SQLite file, PostgreSQL schema).

Where a rule needs two server processes, two storage objects on the same
database stand in for them: on PostgreSQL they are two pools, so the races
are real.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from cuemsg.server.storage.base import IDEMPOTENCY_TTL, ExecutionRow, OutcomeRecord
from tests.storage.helpers import T0, keyed, make_cue, new_fire, opened, problem_of, tenant

pytestmark = pytest.mark.anyio


async def test_meta_tenants_and_keys(db_url: str) -> None:
    async with opened(db_url) as s:
        assert await s.get_meta("nothing") is None
        await s.set_meta("k", "v1")
        await s.set_meta("k", "v2")
        assert await s.get_meta("k") == "v2"
        await s.create_tenant("ten_a", "a@example.com", "hash-a", T0)
        assert await s.tenant_for_key("hash-a") == "ten_a"
        assert await s.tenant_for_key("hash-b") is None


async def test_cue_names_are_unique_per_tenant(db_url: str) -> None:
    async with opened(db_url) as s:
        a, b = await tenant(s), await tenant(s)
        first = await make_cue(s, a, name="inbox")
        p = await problem_of(make_cue(s, a, name="inbox"))
        assert (p.status, p.code, p.field) == (409, "cue_name_taken", "name")
        await make_cue(s, b, name="inbox")  # another tenant may use the name
        other = await make_cue(s, a, name="outbox")
        p = await problem_of(s.update_cue(a, other.id, {"name": "inbox"}, T0 + 1))
        assert (p.status, p.code) == (409, "cue_name_taken")
        renamed = await s.update_cue(a, other.id, {"name": "sent", "status": "paused"}, T0 + 2)
        assert renamed is not None and renamed.name == "sent" and renamed.updated_at == T0 + 2
        assert await s.update_cue(b, first.id, {"status": "paused"}, T0) is None
        cues, total = await s.list_cues(a, status=None, limit=10, offset=0)
        assert total == 2 and {c.name for c in cues} == {"inbox", "sent"}
        paused, total = await s.list_cues(a, status="paused", limit=10, offset=0)
        assert total == 1 and paused[0].id == other.id
        assert not await s.delete_cue(b, first.id)
        assert await s.delete_cue(a, first.id)
        assert await s.get_cue(a, first.id) is None


async def test_fire_stores_the_effective_payload_and_counts(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "inbox")
        cue = await s.update_cue(t, cue.id, {"payload": {"task": "inbox", "x": 1}}, T0) or cue
        [merged] = await s.fire(t, [new_fire(cue.id, payload_override={"x": 2, "agent": "a"})], T0)
        assert merged.payload == {"task": "inbox", "x": 2, "agent": "a"}
        assert (merged.task, merged.agent, merged.status) == ("inbox", "a", "pending")
        [replaced] = await s.fire(
            t,
            [new_fire(cue.id, payload_override={"task": "other"}, merge_strategy="replace")],
            T0 + 1,
        )
        assert replaced.payload == {"task": "other"} and replaced.task == "other"
        stored = await s.get_execution(t, replaced.id)
        assert stored is not None and stored.payload == {"task": "other"}
        after = await s.get_cue(t, cue.id)
        assert after is not None and after.fired_count == 2 and after.last_run == T0 + 1
        assert after.payload == {"task": "inbox", "x": 1}  # never changed by a fire


async def test_idempotency_key(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        [first] = await s.fire(t, [keyed(cue.id, "k1")], T0)
        [again] = await s.fire(t, [keyed(cue.id, "k1")], T0 + 5)
        assert again.id == first.id
        p = await problem_of(s.fire(t, [keyed(cue.id, "k1", body="different")], T0 + 6))
        assert (p.status, p.code, p.field) == (409, "idempotency_key_conflict", "idempotency_key")
        # In a batch: a repeat returns the same execution; a conflict names its index.
        out = await s.fire(t, [keyed(cue.id, "k2"), keyed(cue.id, "k2"), keyed(cue.id, "k1")], T0)
        assert out[0].id == out[1].id != first.id and out[2].id == first.id
        p = await problem_of(s.fire(t, [keyed(cue.id, "k3"), keyed(cue.id, "k3", body="x")], T0))
        assert (p.code, p.field) == ("idempotency_key_conflict", "fires[1].idempotency_key")
        # Keys are per cue; and a key is forgotten after 24 hours.
        other = await make_cue(s, t)
        [elsewhere] = await s.fire(t, [keyed(other.id, "k1")], T0)
        assert elsewhere.id != first.id
        [later] = await s.fire(t, [keyed(cue.id, "k1", body="new")], T0 + IDEMPOTENCY_TTL + 1)
        assert later.id != first.id
        _, total = await s.list_executions(t, cue_id=cue.id, status=None, limit=50, offset=0)
        assert total == 3  # k1, k2, k1 again after a day; k3's batch failed whole
        # The sweep drops expired keys; a fresh key is kept.
        await s.sweep(T0 + IDEMPOTENCY_TTL + 2, since=T0, unclaimed_timeout=0)
        [kept] = await s.fire(t, [keyed(cue.id, "k1", body="new")], T0 + IDEMPOTENCY_TTL + 3)
        assert kept.id == later.id


async def test_fire_batch_is_all_or_none(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        p = await problem_of(s.fire(t, [new_fire(cue.id), new_fire("cue_missing")], T0))
        assert (p.status, p.code, p.field) == (404, "cue_not_found", "fires[1].cue_id")
        p = await problem_of(s.fire(t, [new_fire("cue_missing")], T0))
        assert (p.code, p.field) == ("cue_not_found", None)
        # Another tenant's cue does not exist for us.
        stranger = await tenant(s)
        p = await problem_of(s.fire(stranger, [new_fire(cue.id)], T0))
        assert p.code == "cue_not_found"
        _, total = await s.list_executions(t, cue_id=None, status=None, limit=50, offset=0)
        assert total == 0
        got = await s.get_cue(t, cue.id)
        assert got is not None and got.fired_count == 0


async def test_list_executions_pages_by_cursor_newest_first(db_url: str) -> None:
    async with opened(db_url) as s:
        t, stranger = await tenant(s), await tenant(s)
        cue, other = await make_cue(s, t), await make_cue(s, t)
        fired = [(await s.fire(t, [new_fire(cue.id, at=T0 + i)], T0 + i))[0].id for i in range(5)]
        await s.fire(t, [new_fire(other.id)], T0)
        first, total = await s.list_executions(t, cue_id=cue.id, status=None, limit=2, offset=0)
        assert total == 5 and [e.id for e in first] == [fired[4], fired[3]]
        second, total = await s.list_executions(
            t, cue_id=cue.id, status=None, limit=2, offset=0, before=first[-1].id
        )
        # With a cursor, the total counts the executions older than it.
        assert total == 3 and [e.id for e in second] == [fired[2], fired[1]]
        last, _ = await s.list_executions(
            t, cue_id=cue.id, status=None, limit=2, offset=0, before=second[-1].id
        )
        assert [e.id for e in last] == [fired[0]]
        end, _ = await s.list_executions(
            t, cue_id=cue.id, status=None, limit=2, offset=0, before=fired[0]
        )
        assert end == []
        # The cursor must be one of the tenant's executions.
        for cursor, who in (("no-such-id", t), (fired[0], stranger)):
            p = await problem_of(
                s.list_executions(who, cue_id=None, status=None, limit=2, offset=0, before=cursor)
            )
            assert (p.status, p.code, p.field) == (422, "validation_error", "before")
            assert cursor in p.message


async def test_concurrent_fires_with_one_key_make_one_execution(db_url: str) -> None:
    async with opened(db_url) as a, opened(db_url) as b:
        t = await tenant(a)
        cue = await make_cue(a, t)
        results = await asyncio.gather(
            *((a if i % 2 else b).fire(t, [keyed(cue.id, "once")], T0) for i in range(20))
        )
        assert len({r[0].id for r in results}) == 1
        _, total = await a.list_executions(t, cue_id=cue.id, status=None, limit=50, offset=0)
        assert total == 1


async def test_claim_order_oldest_first_ties_in_fire_order(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        ties = await s.fire(t, [new_fire(cue.id, payload_override={"n": i}) for i in range(3)], T0)
        [older] = await s.fire(t, [new_fire(cue.id, T0 - 100)], T0 - 100)
        [later] = await s.fire(t, [new_fire(cue.id, T0 + 50)], T0)  # scheduled for later
        [future] = await s.fire(t, [new_fire(cue.id, T0 + 5000)], T0)
        expected = [older.id, *(e.id for e in ties), later.id]
        listed = await s.list_claimable(t, task="t", agent=None, now=T0 + 60, limit=50)
        assert [e.id for e in listed] == expected
        assert all(e.cue_name == cue.name for e in listed)
        assert [
            e.id for e in await s.list_claimable(t, task=None, agent=None, now=T0, limit=2)
        ] == [
            older.id,
            ties[0].id,
        ]
        claimed = await s.claim_next(
            t, "w", task="t", agent=None, now=T0 + 60, lease_seconds=30, limit=3
        )
        assert [e.id for e in claimed] == expected[:3]
        assert all(e.status == "delivering" and e.attempts == 1 for e in claimed)
        rest = await s.claim_next(
            t, "w", task=None, agent=None, now=T0 + 60, lease_seconds=30, limit=10
        )
        assert [e.id for e in rest] == expected[3:]  # the future one is not due
        assert future.id not in {e.id for e in rest}
        assert (
            await s.claim_next(
                t, "w", task=None, agent=None, now=T0 + 60, lease_seconds=30, limit=10
            )
            == []
        )


async def test_claim_filters_by_task_and_agent(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "a")
        await s.fire(t, [new_fire(cue.id) for _ in range(60)], T0)  # a backlog of "a"
        [b] = await s.fire(t, [new_fire(cue.id, payload_override={"task": "b"})], T0)
        [agent] = await s.fire(t, [new_fire(cue.id, payload_override={"agent": "x"})], T0)
        # The filter applies before the limit: "b" is found behind 60 older "a".
        assert [
            e.id for e in await s.list_claimable(t, task="b", agent=None, now=T0, limit=50)
        ] == [b.id]
        got = await s.claim_next(t, "w", task="b", agent=None, now=T0, lease_seconds=9, limit=5)
        assert [e.id for e in got] == [b.id]
        got = await s.claim_next(t, "w", task=None, agent="x", now=T0, lease_seconds=9, limit=5)
        assert [e.id for e in got] == [agent.id]
        webhook = await make_cue(
            s, t, "a", transport="webhook", callback={"url": "http://example.com"}
        )
        await s.fire(t, [new_fire(webhook.id)], T0 - 1)  # older, but not a worker cue
        got = await s.claim_next(t, "w", task="a", agent=None, now=T0, lease_seconds=9, limit=1)
        assert got[0].cue_id == cue.id


async def test_settle_and_claim_if_claimable(db_url: str) -> None:
    """Nothing claimable: nothing recorded (None); work waiting: the outcomes and
    the claim as `settle_and_claim` does them."""
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, task="a")
        [held] = await s.fire(t, [new_fire(cue.id)], T0)
        await s.claim_next(t, "w", task="a", agent=None, now=T0, lease_seconds=30, limit=1)
        done = [(held.id, OutcomeRecord(success=True, recorded_at=T0))]

        async def settle(task: str | None, now: float = T0) -> Any:
            return await s.settle_and_claim_if_claimable(
                t, "w", done, task=task, agent=None, now=now, lease_seconds=30, limit=1
            )

        await s.fire(t, [new_fire(cue.id, at=T0 + 60)], T0)  # due later
        assert await settle("a") is None and await settle("b") is None
        stored = await s.get_execution(t, held.id)
        assert stored is not None and stored.status == "delivering"  # nothing recorded
        result = await settle("a", now=T0 + 60)  # now it is due
        assert result is not None
        [recorded], [claimed] = result
        assert isinstance(recorded, ExecutionRow) and recorded.status == "success"
        assert claimed.status == "delivering" and claimed.claimed_by_worker == "w"


async def test_claims_are_atomic_across_two_stores(db_url: str) -> None:
    async with opened(db_url) as a, opened(db_url) as b:
        t = await tenant(a)
        cue = await make_cue(a, t)
        fired = await a.fire(t, [new_fire(cue.id) for _ in range(90)], T0)
        taken: list[str] = []

        async def receiver(i: int) -> None:
            store = a if i % 2 else b
            while True:
                got = await store.claim_next(
                    t, f"w{i}", task="t", agent=None, now=T0, lease_seconds=60, limit=1 + i % 3
                )
                if not got:
                    return
                taken.extend(e.id for e in got)

        await asyncio.gather(*(receiver(i) for i in range(12)))
        assert sorted(taken) == sorted(e.id for e in fired)  # each exactly once


async def test_claim_by_id_is_atomic(db_url: str) -> None:
    async with opened(db_url) as a, opened(db_url) as b:
        t = await tenant(a)
        cue = await make_cue(a, t)
        [e] = await a.fire(t, [new_fire(cue.id)], T0)

        async def grab(i: int) -> str:
            store = a if i % 2 else b
            try:
                await store.claim(t, e.id, f"w{i}", T0, 30)
            except Exception as exc:
                return getattr(exc, "code", repr(exc))
            return "ok"

        codes = await asyncio.gather(*(grab(i) for i in range(10)))
        assert sorted(codes) == ["claim_failed"] * 9 + ["ok"]
        p = await problem_of(a.claim(t, "no-such-id", "w", T0, 30))
        assert (p.status, p.code) == (404, "execution_not_found")
        p = await problem_of(a.claim(await tenant(a), e.id, "w", T0, 30))
        assert p.code == "execution_not_found"
        [future] = await a.fire(t, [new_fire(cue.id, T0 + 100)], T0)
        p = await problem_of(a.claim(t, future.id, "w", T0, 30))
        assert (p.status, p.code) == (409, "claim_failed")


async def test_heartbeat_and_outcome_rules(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        [e] = await s.fire(t, [new_fire(cue.id)], T0)
        ok = OutcomeRecord(success=True, result="done", recorded_at=T0 + 2)

        p = await problem_of(s.heartbeat(t, e.id, "w1", T0, 30))
        assert (p.status, p.code) == (409, "execution_not_claiming")
        p = await problem_of(s.record_outcome(t, e.id, "w1", ok))
        assert (p.status, p.code) == (409, "execution_not_claiming")
        for call in (s.heartbeat(t, "nope", "w1", T0, 30), s.record_outcome(t, "nope", None, ok)):
            p = await problem_of(call)
            assert (p.status, p.code) == (404, "execution_not_found")

        await s.claim(t, e.id, "w1", T0, 30)
        p = await problem_of(s.heartbeat(t, e.id, "w2", T0 + 1, 30))
        assert (p.status, p.code) == (403, "not_execution_owner")
        beat = await s.heartbeat(t, e.id, "w1", T0 + 1, 30)
        assert beat.lease_expires_at == T0 + 31
        assert (await s.heartbeat(t, e.id, None, T0 + 2, 30)).lease_expires_at == T0 + 32
        p = await problem_of(s.heartbeat(await tenant(s), e.id, "w1", T0, 30))
        assert p.code == "execution_not_found"
        p = await problem_of(s.record_outcome(t, e.id, "w2", ok))
        assert (p.status, p.code) == (403, "not_execution_owner")

        done = await s.record_outcome(t, e.id, "w1", ok)
        assert done.status == "success" and done.lease_expires_at is None
        assert done.outcome is not None and done.outcome.result == "done"
        for worker in ("w1", "w2", None):
            p = await problem_of(s.record_outcome(t, e.id, worker, ok))
            assert (p.status, p.code) == (409, "outcome_already_recorded")
        p = await problem_of(s.heartbeat(t, e.id, "w1", T0 + 3, 30))
        assert p.code == "execution_not_claiming"

        # Without a worker id an outcome is accepted (as the reference does); failure is final.
        [f] = await s.fire(t, [new_fire(cue.id)], T0)
        await s.claim(t, f.id, "w1", T0, 30)
        failed = await s.record_outcome(
            t, f.id, None, OutcomeRecord(success=False, error="boom", recorded_at=T0)
        )
        assert failed.status == "failed" and failed.outcome is not None
        assert failed.outcome.error == "boom"
        stored = await s.get_execution(t, f.id)
        assert stored is not None and stored.outcome == failed.outcome


async def test_sweep_requeues_an_expired_lease_and_wakes_waiters(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        [e] = await s.fire(t, [new_fire(cue.id)], T0)
        await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=10, limit=1)
        await s.sweep(T0 + 9, since=T0, unclaimed_timeout=0)
        stored = await s.get_execution(t, e.id)
        assert stored is not None and stored.status == "delivering"  # lease still running
        waiter = s.notifier.subscribe(t, "t")
        try:
            await s.sweep(T0 + 11, since=T0 + 9, unclaimed_timeout=0)
            assert await waiter.wait(5)
        finally:
            waiter.close()
        stored = await s.get_execution(t, e.id)
        assert stored is not None and stored.status == "pending"
        assert stored.claimed_by_worker is None and stored.attempts == 1
        again = await s.claim(t, e.id, "w2", T0 + 12, 10)
        assert again.attempts == 2 and again.claimed_by_worker == "w2"
        # The first worker lost the lease: its late outcome is refused.
        p = await problem_of(s.record_outcome(t, e.id, "w1", OutcomeRecord(success=True)))
        assert (p.status, p.code) == (403, "not_execution_owner")


async def test_claim_cap_fails_after_max_attempts(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, max_attempts=2)
        [e] = await s.fire(t, [new_fire(cue.id)], T0)
        now = T0
        for attempt in (1, 2):
            [got] = await s.claim_next(
                t, "w", task="t", agent=None, now=now, lease_seconds=5, limit=1
            )
            assert got.id == e.id and got.attempts == attempt
            now += 6
            await s.sweep(now, since=now - 6, unclaimed_timeout=0)
        stored = await s.get_execution(t, e.id)
        assert stored is not None and stored.status == "failed" and stored.attempts == 2
        assert stored.outcome is not None and stored.outcome.success is False
        assert stored.outcome.error is not None and "claim cap" in stored.outcome.error
        assert (
            await s.claim_next(t, "w", task="t", agent=None, now=now, lease_seconds=5, limit=1)
            == []
        )
        p = await problem_of(s.record_outcome(t, e.id, "w", OutcomeRecord(success=True)))
        assert p.code == "outcome_already_recorded"


async def test_sweep_marks_unclaimed_missed_and_wakes_for_due_work(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        [old] = await s.fire(t, [new_fire(cue.id)], T0)
        [due] = await s.fire(t, [new_fire(cue.id, T0 + 100)], T0)
        waiter = s.notifier.subscribe(t, "t")
        try:
            await s.sweep(T0 + 50, since=T0, unclaimed_timeout=0)
            assert not await waiter.wait(0.05)  # nothing came due yet
            await s.sweep(T0 + 101, since=T0 + 50, unclaimed_timeout=60)
            assert await waiter.wait(5)
        finally:
            waiter.close()
        stored_old = await s.get_execution(t, old.id)
        stored_due = await s.get_execution(t, due.id)
        assert stored_old is not None and stored_old.status == "missed"
        assert stored_due is not None and stored_due.status == "pending"


async def test_fire_wakes_a_waiter_of_its_task_only(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "a")
        for_a, for_b, for_any = (s.notifier.subscribe(t, k) for k in ("a", "b", None))
        try:
            await s.fire(t, [new_fire(cue.id)], T0)
            # One execution wakes one waiter: the task's own before the tenant-wide one.
            assert await for_a.wait(5)
            assert not await for_any.wait(0.05)
            await s.fire(t, [new_fire(cue.id)], T0)
            assert await for_any.wait(5)
            assert not await for_b.wait(0.05)
        finally:
            for w in (for_a, for_b, for_any):
                w.close()


async def test_list_executions_filters_and_pages(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        one, two = await make_cue(s, t), await make_cue(s, t)
        fired = await s.fire(t, [new_fire(one.id), new_fire(two.id), new_fire(one.id)], T0)
        await s.claim(t, fired[0].id, "w", T0, 30)
        page, total = await s.list_executions(t, cue_id=None, status=None, limit=2, offset=0)
        assert total == 3 and [e.id for e in page] == [fired[2].id, fired[1].id]  # newest first
        page, total = await s.list_executions(t, cue_id=None, status=None, limit=2, offset=2)
        assert [e.id for e in page] == [fired[0].id]
        page, total = await s.list_executions(t, cue_id=one.id, status="pending", limit=9, offset=0)
        assert total == 1 and page[0].id == fired[2].id


async def test_workers(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        await s.worker_heartbeat(t, "w1", ["a"], T0)
        await s.worker_heartbeat(t, "w2", [], T0 + 1)
        await s.worker_heartbeat(t, "w1", ["a", "b"], T0 + 2)
        workers = await s.list_workers(t)
        assert [(w.worker_id, w.handlers, w.last_heartbeat) for w in workers] == [
            ("w1", ["a", "b"], T0 + 2),
            ("w2", [], T0 + 1),
        ]
        assert await s.list_workers(await tenant(s)) == []


async def test_restart_keeps_every_row(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        await s.create_tenant("ten_keep", "k@example.com", "hash-keep", T0)
        await s.set_meta("dev_api_key", "cue_sk_kept")
        cue = await make_cue(s, t)
        fired = await s.fire(
            t, [keyed(cue.id, f"m{i}", payload_override={"i": i}) for i in range(5)], T0
        )
        await s.claim(t, fired[0].id, "w1", T0, 3600)
        await s.claim(t, fired[1].id, "w1", T0, 3600)
        await s.record_outcome(t, fired[1].id, "w1", OutcomeRecord(success=True, recorded_at=T0))
        await s.worker_heartbeat(t, "w1", ["t"], T0)
    async with opened(db_url) as s:
        assert await s.get_meta("dev_api_key") == "cue_sk_kept"
        assert await s.tenant_for_key("hash-keep") == "ten_keep"
        got = await s.get_cue(t, cue.id)
        assert got is not None and got.fired_count == 5
        states = {
            e.id: e
            for e in (await s.list_executions(t, cue_id=None, status=None, limit=50, offset=0))[0]
        }
        assert states[fired[0].id].status == "delivering"
        assert states[fired[0].id].claimed_by_worker == "w1"
        assert states[fired[1].id].status == "success"
        assert [states[e.id].payload for e in fired] == [{"task": "t", "i": i} for i in range(5)]
        # Idempotency keys survive too, and so does the claim order.
        [again] = await s.fire(t, [keyed(cue.id, "m3", payload_override={"i": 3})], T0 + 1)
        assert again.id == fired[3].id
        got_next = await s.claim_next(
            t, "w2", task="t", agent=None, now=T0, lease_seconds=9, limit=9
        )
        assert [e.id for e in got_next] == [e.id for e in fired[2:]]
        assert [w.worker_id for w in await s.list_workers(t)] == ["w1"]
        await s.record_outcome(t, fired[0].id, "w1", OutcomeRecord(success=True))


async def test_strings_round_trip(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        task = "ünïcødé task " + secrets.token_hex(2) + " 🚀 'quoted' \"double\" %s {}"
        cue = await make_cue(s, t, task, name="名前 " + task)
        body = {"nested": {"list": [1, 2.5, None, True, "x"]}, "big": 2**53, "task": task}
        [e] = await s.fire(t, [new_fire(cue.id, payload_override=body)], T0)
        [got] = await s.claim_next(t, "w", task=task, agent=None, now=T0, lease_seconds=9, limit=1)
        assert got.id == e.id and got.payload == body
        stored = await s.get_cue(t, cue.id)
        assert stored is not None and stored.name == cue.name
