"""The async client against our own server, and the same scenario through both clients."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from cuemsg.cueapi import (
    AsyncCueClient,
    ClaimResult,
    Conflict,
    CueClient,
    ExtensionNotAvailable,
    FireRequest,
    Forbidden,
    NotFound,
    OutcomeRequest,
    OutcomeResult,
)
from cuemsg.testing import RunningServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both event loops anyio supports (the docs promise both)."""
    return str(request.param)


def _scenario_sync(c: CueClient) -> list[Any]:
    """Create, fire (single, keyed, batch), claim with task, heartbeat, ack, read back."""
    out: list[Any] = []
    cue = c.cues.create("scenario", payload={"task": "sc", "base": 1}, description="d")
    out.append(("cue", cue.name, cue.payload, cue.status, cue.transport))
    first = c.cues.fire(cue.id, {"n": 1}, idempotency_key="k1")
    again = c.cues.fire(cue.id, {"n": 1}, idempotency_key="k1")
    out.append(("idempotent", first.id == again.id))
    many = c.cues.fire_many([FireRequest(cue_id=cue.id, payload_override={"n": i}) for i in (2, 3)])
    out.append(("fired", len(many)))
    got = c.executions.claim_next(worker_id="w", task="sc", limit=2)
    out.append(("claim", _shape(got)))
    ids = [e.execution_id for e in got.executions]
    out.append(("hb", c.executions.heartbeat(ids[0], worker_id="w").acknowledged))
    results = c.executions.report_outcomes(
        [OutcomeRequest(execution_id=i, success=True) for i in ids]
        + [OutcomeRequest(execution_id=ids[0], success=True)],
        worker_id="w",
    )
    out.append(("acks", [_result(r) for r in results]))
    out.append(("left", _shape(c.executions.claim_next(worker_id="w", task="sc"))))
    out.append(("none", _shape(c.executions.claim_next(worker_id="w", task="sc"))))
    page = c.executions.list(cue_id=cue.id)
    out.append(("list", page.total, sorted(e.status for e in page.executions)))
    return out


async def _scenario_async(c: AsyncCueClient) -> list[Any]:
    """The same steps as `_scenario_sync`, awaited."""
    out: list[Any] = []
    cue = await c.cues.create("scenario", payload={"task": "sc", "base": 1}, description="d")
    out.append(("cue", cue.name, cue.payload, cue.status, cue.transport))
    first = await c.cues.fire(cue.id, {"n": 1}, idempotency_key="k1")
    again = await c.cues.fire(cue.id, {"n": 1}, idempotency_key="k1")
    out.append(("idempotent", first.id == again.id))
    many = await c.cues.fire_many(
        [FireRequest(cue_id=cue.id, payload_override={"n": i}) for i in (2, 3)]
    )
    out.append(("fired", len(many)))
    got = await c.executions.claim_next(worker_id="w", task="sc", limit=2)
    out.append(("claim", _shape(got)))
    ids = [e.execution_id for e in got.executions]
    out.append(("hb", (await c.executions.heartbeat(ids[0], worker_id="w")).acknowledged))
    results = await c.executions.report_outcomes(
        [OutcomeRequest(execution_id=i, success=True) for i in ids]
        + [OutcomeRequest(execution_id=ids[0], success=True)],
        worker_id="w",
    )
    out.append(("acks", [_result(r) for r in results]))
    out.append(("left", _shape(await c.executions.claim_next(worker_id="w", task="sc"))))
    out.append(("none", _shape(await c.executions.claim_next(worker_id="w", task="sc"))))
    page = await c.executions.list(cue_id=cue.id)
    out.append(("list", page.total, sorted(e.status for e in page.executions)))
    return out


def _shape(r: ClaimResult) -> Any:
    """A ClaimResult without its ids and times (which differ between tenants)."""
    execs = [(e.task, e.payload, e.attempts, e.lease_seconds) for e in r.executions]
    return (r.claimed, r.reason, r.task, execs)


def _result(r: OutcomeResult | Exception) -> Any:
    if isinstance(r, OutcomeResult):
        return (r.outcome_recorded, r.outcome_state)
    return (type(r).__name__, getattr(r, "code", None))


async def test_sync_and_async_give_equal_results(server: RunningServer) -> None:
    with CueClient(server.new_key(), server.base_url) as sync_client:
        expected = await anyio.to_thread.run_sync(_scenario_sync, sync_client)
        sync_count = sync_client.request_count
    async with AsyncCueClient(server.new_key(), server.base_url) as async_client:
        got = await _scenario_async(async_client)
        assert async_client.request_count == sync_count
    assert got == expected
    assert (
        "acks",
        [(True, "success"), (True, "success"), ("Conflict", "outcome_already_recorded")],
    ) in got


async def test_async_resources(aclient: AsyncCueClient, extensions_on: bool) -> None:
    info = await aclient.info()
    assert bool(info.extensions) == extensions_on
    assert aclient.extensions == frozenset(info.extensions)
    assert await aclient.load_extensions() == frozenset(info.extensions)

    cue = await aclient.cues.create("a1", payload={"task": "at"})
    assert (await aclient.cues.get(cue.id)).id == cue.id
    assert (await aclient.cues.list()).total == 1
    assert (await aclient.cues.update(cue.id, description="x")).description == "x"
    assert (await aclient.cues.pause(cue.id)).status == "paused"
    assert (await aclient.cues.resume(cue.id)).status == "active"

    fired = await aclient.cues.fire(cue.id, {"q": 1})
    assert (await aclient.executions.get(fired.id)).payload == {"task": "at", "q": 1}
    [row] = await aclient.executions.list_claimable(task="at")
    claimed = await aclient.executions.claim(row.execution_id, worker_id="w1")
    assert claimed.execution_id == fired.id
    with pytest.raises(Forbidden):
        await aclient.executions.heartbeat(fired.id, worker_id="w2")
    done = await aclient.executions.report_outcome(fired.id, worker_id="w1", success=True)
    assert done.outcome_state == "success"
    with pytest.raises(Conflict):
        await aclient.executions.report_outcome(fired.id, worker_id="w1", success=True)

    ack = await aclient.workers.heartbeat("d1", ["at"])
    assert ack.acknowledged
    if extensions_on:
        assert [w.worker_id for w in await aclient.workers.list()] == ["d1"]
    else:
        with pytest.raises(ExtensionNotAvailable):
            await aclient.workers.list()

    await aclient.cues.delete(cue.id)
    with pytest.raises(NotFound):
        await aclient.cues.get(cue.id)


async def test_async_extensions_before_probe(server: RunningServer, api_key: str) -> None:
    async with AsyncCueClient(api_key, server.base_url) as c:
        with pytest.raises(RuntimeError, match="load_extensions"):
            c.extensions  # noqa: B018
    async with AsyncCueClient(api_key, server.base_url, use_extensions=False) as c:
        assert c.extensions == frozenset()


async def test_async_long_poll_wakes_on_fire(aclient: AsyncCueClient) -> None:
    cue = await aclient.cues.create(f"lp-{uuid.uuid4().hex[:6]}", payload={"task": "lp"})
    result: list[ClaimResult] = []

    async def receive() -> None:
        result.append(await aclient.executions.claim_next(worker_id="w", task="lp", wait=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive)
        await anyio.sleep(0.2)
        await aclient.cues.fire(cue.id, {"hello": True})
    assert result[0].claimed and result[0].executions[0].payload == {"task": "lp", "hello": True}


async def test_async_register_and_race(server: RunningServer) -> None:
    async with AsyncCueClient(base_url=server.base_url) as anonymous:
        key = (await anonymous.register(f"{uuid.uuid4().hex[:8]}@example.com"))["api_key"]
    async with AsyncCueClient(key, server.base_url) as a, AsyncCueClient(key, server.base_url) as b:
        cue = await a.cues.create("race", payload={"task": "r"})
        await a.cues.fire(cue.id)
        results: list[ClaimResult] = []

        async def take(c: AsyncCueClient, name: str) -> None:
            results.append(await c.executions.claim_next(worker_id=name, task="r"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, a, "a")
            tg.start_soon(take, b, "b")
        assert sorted(r.claimed for r in results) == [False, True]
