"""Outcome batches and `settle_and_claim` (the `claim.settle` extension's one
transaction), called directly on every backend."""

from __future__ import annotations

import pytest

from cuemsg.server.errors import ApiProblem
from cuemsg.server.storage.base import OutcomeRecord
from tests.storage.helpers import T0, make_cue, new_fire, opened, tenant

pytestmark = pytest.mark.anyio


def _ok(result: str = "done") -> OutcomeRecord:
    return OutcomeRecord(success=True, result=result, recorded_at=T0 + 1)


def _code(item: object) -> str:
    assert isinstance(item, ApiProblem), item
    return item.code


async def test_a_batch_records_each_item_on_its_own(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        fired = await s.fire(t, [new_fire(cue.id) for _ in range(4)], T0)
        mine = await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=9, limit=2)
        [theirs] = await s.claim_next(
            t, "w2", task="t", agent=None, now=T0, lease_seconds=9, limit=1
        )
        pending = fired[3].id
        results = await s.record_outcomes(
            t,
            [
                (mine[1].id, _ok("b")),
                ("no-such-execution", _ok()),
                (theirs.id, _ok()),
                (mine[0].id, _ok("a")),
                (mine[1].id, _ok("again")),  # a repeat in the same batch
                (pending, _ok()),
            ],
            "w1",
        )
        codes = [r.status if not isinstance(r, ApiProblem) else r.code for r in results]
        assert codes == [
            "success",
            "execution_not_found",
            "not_execution_owner",
            "success",
            "outcome_already_recorded",
            "execution_not_claiming",
        ]
        got = await s.get_execution(t, mine[1].id)
        assert got is not None and got.outcome is not None and got.outcome.result == "b"
        assert (await s.get_execution(t, theirs.id)).status == "delivering"


async def test_settle_and_claim_records_then_claims(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        first, second, third = await s.fire(t, [new_fire(cue.id) for _ in range(3)], T0)
        [held] = await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=9, limit=1)
        [other] = await s.claim_next(
            t, "w2", task="t", agent=None, now=T0, lease_seconds=9, limit=1
        )
        assert (held.id, other.id) == (first.id, second.id)
        settled, claimed = await s.settle_and_claim(
            t,
            "w1",
            [(other.id, _ok()), (held.id, _ok())],  # the first is refused: w2 holds it
            task="t",
            agent=None,
            now=T0 + 1,
            lease_seconds=9,
            limit=5,
        )
        assert _code(settled[0]) == "not_execution_owner"
        assert not isinstance(settled[1], ApiProblem) and settled[1].status == "success"
        assert [e.id for e in claimed] == [third.id]  # the refusal did not stop the claim
        assert claimed[0].claimed_by_worker == "w1" and claimed[0].status == "delivering"
        assert (await s.get_execution(t, held.id)).status == "success"


async def test_settle_and_claim_with_nothing_claimable_still_records(db_url: str) -> None:
    async with opened(db_url) as s:
        t = await tenant(s)
        cue = await make_cue(s, t)
        await s.fire(t, [new_fire(cue.id)], T0)
        [held] = await s.claim_next(t, "w1", task="t", agent=None, now=T0, lease_seconds=9, limit=1)
        settled, claimed = await s.settle_and_claim(
            t,
            "w1",
            [(held.id, OutcomeRecord(success=False, error="no", recorded_at=T0 + 1))],
            task="t",
            agent=None,
            now=T0 + 1,
            lease_seconds=9,
            limit=1,
        )
        assert claimed == []
        assert not isinstance(settled[0], ApiProblem) and settled[0].status == "failed"
        got = await s.get_execution(t, held.id)
        assert got is not None and got.status == "failed" and got.outcome is not None
        assert got.outcome.error == "no"
        # Nothing to settle: a plain claim in the same call.
        settled, claimed = await s.settle_and_claim(
            t, "w1", [], task="t", agent=None, now=T0 + 1, lease_seconds=9, limit=1
        )
        assert (settled, claimed) == ([], [])
