"""The feed's storage side on every backend: stamps on each state change,
reads that lose nothing (concurrent writers, two pools on PostgreSQL, reads
cut by their limit), tenant scope, and redrive."""

from __future__ import annotations

import asyncio
import time

import pytest

from cuemsg.server.feed import events_of
from cuemsg.server.storage.base import OutcomeRecord, Storage
from tests.storage.helpers import T0, make_cue, new_fire, opened, problem_of, tenant

pytestmark = pytest.mark.anyio


async def _all_events(s: Storage, tenant_id: str, after: int = 0, limit: int = 500) -> list[int]:
    """Every stamp on record for the tenant, read in batches of `limit` rows."""
    seen: list[int] = []
    while True:
        batch = await s.read_events(tenant_id, after, cue_id=None, limit=limit)
        seen += [e.seq for e in events_of(batch.rows, after=after, upto=batch.upto, thread=None)]
        if batch.upto <= after and len(batch.rows) < limit:
            return seen
        after = max(after, batch.upto)


async def test_each_state_change_stamps_once(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "inbox")
        [e] = await s.fire(t, [new_fire(cue.id)], T0)
        await s.claim(t, e.id, "w1", T0, 60)
        await s.heartbeat(t, e.id, "w1", T0 + 1, 60)  # a heartbeat is no event
        await s.record_outcome(t, e.id, "w1", OutcomeRecord(success=True, recorded_at=T0 + 2))
        batch = await s.read_events(t, 0, cue_id=None, limit=10)
        events = events_of(batch.rows, after=0, upto=batch.upto, thread=None)
        assert [ev.type for ev in events] == ["fired", "claimed", "outcome"]
        assert [ev.seq for ev in events] == sorted(ev.seq for ev in events)
        assert batch.upto == await s.event_head() >= events[-1].seq
        # Nothing for another tenant, nor for another cue.
        other = await tenant(s)
        assert (await s.read_events(other, 0, cue_id=None, limit=10)).rows == []
        assert (await s.read_events(t, 0, cue_id="cue_nothere", limit=10)).rows == []


async def test_concurrent_writers_lose_nothing(db_url: str) -> None:
    # On PostgreSQL the reader is a second pool (another replica); a SQLite file has
    # one server process, so there it is the writers' own storage.
    async with opened(db_url) as a, opened(db_url) as other:
        reader = other if db_url.startswith("postgresql") else a
        t = await tenant(a)
        done = False

        async def write(task: str, n: int) -> None:
            cue = await make_cue(a, t, task)  # a task each: each claims its own fires
            for _ in range(n):
                now = time.time()
                await a.fire(t, [new_fire(cue.id, at=now)], now)
                [c] = await a.claim_next(
                    t, "w", task=task, agent=None, now=now, lease_seconds=60, limit=1
                )
                await a.record_outcome(t, c.id, "w", OutcomeRecord(success=True, recorded_at=now))

        seen: list[int] = []

        async def read() -> None:
            after = 0
            while True:
                stop = done
                batch = await reader.read_events(t, after, cue_id=None, limit=500)
                seen.extend(
                    e.seq for e in events_of(batch.rows, after=after, upto=batch.upto, thread=None)
                )
                after = max(after, batch.upto)
                if stop:
                    return
                await asyncio.sleep(0)

        task = asyncio.create_task(read())
        await asyncio.gather(write("x0", 40), write("x1", 40))
        done = True
        await task
        head = await a.event_head()
        assert len(seen) == len(set(seen)) == 240
        assert seen == sorted(seen)
        assert set(seen) == set(await _all_events(a, t))
        assert max(seen) <= head


async def test_a_read_cut_by_its_limit_loses_nothing(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "x")
        fired = await s.fire(t, [new_fire(cue.id) for _ in range(12)], T0)
        # Claim the oldest ones last: their newest stamps come after the rest's.
        for e in reversed(fired[:4]):
            await s.claim(t, e.id, "w", T0, 60)
        expected = await _all_events(s, t, limit=1000)
        assert len(expected) == 16
        for limit in (1, 2, 3, 5):
            assert await _all_events(s, t, limit=limit) == expected


async def test_redrive_once_and_both_ways(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "x")
        payload = {"task": "x", "cuemsg": {"v": 1, "id": "m1", "headers": {"a": "b"}}}
        [e] = await s.fire(t, [new_fire(cue.id, payload_override=payload)], T0)
        p = await problem_of(s.redrive(t, e.id, T0))
        assert (p.status, p.code) == (409, "not_dead_letter")
        await s.claim(t, e.id, "w", T0, 60)
        await s.record_outcome(t, e.id, "w", OutcomeRecord(success=False, recorded_at=T0))
        new, created = await s.redrive(t, e.id, T0 + 1)
        assert created and new.status == "pending" and new.redrive_of == e.id
        assert new.payload["cuemsg"]["headers"] == {"a": "b"}  # the signed part unchanged
        assert new.payload["cuemsg"]["redrive_of"] == e.id
        assert new.payload["cuemsg"]["attempt"] == 2 and new.payload["cuemsg"]["id"] == "m1"
        dead = await s.get_execution(t, e.id)
        assert dead is not None and dead.redriven_to == new.id and dead.status == "failed"
        again, created = await s.redrive(t, e.id, T0 + 2)
        assert (again.id, created) == (new.id, False)
        [claimed] = await s.claim_next(
            t, "w", task="x", agent=None, now=T0 + 3, lease_seconds=60, limit=5
        )
        assert claimed.id == new.id  # one new execution, claimable
        p = await problem_of(s.redrive(await tenant(s), e.id, T0))
        assert (p.status, p.code) == (404, "execution_not_found")
