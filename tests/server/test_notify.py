"""The long-poll notifier: wake as many waiters as there is work, lose no wake."""

from __future__ import annotations

import asyncio

import pytest

from cuemsg.server.notify import Handoff, Notifier
from tests.storage.helpers import parked

pytestmark = pytest.mark.anyio


async def test_one_execution_wakes_one_waiter_oldest_first() -> None:
    n = Notifier()
    first, second = n.subscribe("t1", "a"), n.subscribe("t1", "a")
    n.notify("t1", "a")
    assert first.woken and not second.woken
    assert n.waiting() == 1
    n.notify("t1", "a", count=5)
    assert second.woken and n.waiting() == 0


async def test_task_waiters_before_tenant_wide_and_tenants_apart() -> None:
    n = Notifier()
    anything = n.subscribe("t1", None)
    on_task = n.subscribe("t1", "a")
    other_tenant = n.subscribe("t2", "a")
    n.notify("t1", "a")
    assert on_task.woken and not anything.woken and not other_tenant.woken
    n.notify("t1", "b")
    assert anything.woken and not other_tenant.woken


async def test_agent_filtered_waiters_all_wake() -> None:
    n = Notifier()
    agents = [n.subscribe("t1", "a", agent=f"x{i}") for i in range(3)]
    plain = [n.subscribe("t1", "a") for _ in range(2)]
    n.notify("t1", "a")
    assert all(w.woken for w in agents)
    assert [w.woken for w in plain] == [True, False]


async def test_pass_on_hands_the_wake_to_the_next_waiter() -> None:
    n = Notifier()
    leaving, staying = n.subscribe("t1", "a"), n.subscribe("t1", "a")
    n.notify("t1", "a")
    assert leaving.woken and not staying.woken
    leaving.pass_on()
    leaving.close()
    assert staying.woken


async def test_wait_times_out_and_close_unsubscribes() -> None:
    n = Notifier()
    waiter = n.subscribe("t1", "a")
    assert await waiter.wait(0.01) is False
    waiter.close()
    assert n.waiting() == 0
    waiter.pass_on()  # never woken: hands nothing on
    late = n.subscribe("t1", "a")
    n.notify("t1", "a")
    assert await late.wait(1) is True


async def test_wake_all_wakes_everyone() -> None:
    n = Notifier()
    waiters = [n.subscribe(f"t{i}", None) for i in range(3)]
    n.wake_all()
    assert all(w.woken for w in waiters) and n.waiting() == 0


async def test_the_taker_is_the_waiter_a_notify_would_wake_first() -> None:
    n = Notifier()
    agent = await parked(n, "t1", "a", agent="x", handoff=Handoff("w0", 9.0))
    assert agent.handoff is None  # an agent filter takes no handed work
    plain = await parked(n, "t1", "a")
    taker = await parked(n, "t1", "a", handoff=Handoff("w1", 9.0))
    assert n.taker("t1", "a") is None  # the oldest (agent aside) takes none: woken as usual
    n.notify("t1", "a")
    assert plain.woken and agent.woken and not taker.woken
    assert n.taker("t1", "a") is taker and n.waiting() == 0  # taken out of the waiting
    taker.hand([])  # nothing claimed after all (a failed fire): woken to claim as usual
    assert taker.woken and taker.handed is None and n.handed == 0
    anything = await parked(n, "t1", None, handoff=Handoff("w2", 9.0))
    assert n.taker("t2", "a") is None  # another tenant
    assert n.taker("t1", "b") is anything  # tenant-wide: any task
    anything.hand(["row"])
    assert anything.handed == ["row"] and n.handed == 1
    bystander = n.subscribe("t1", None)
    anything.pass_on()  # handed work is delivered or released by its handler, never passed on
    assert not bystander.woken


async def test_a_taken_waiter_waits_past_its_timeout_for_its_hand_over() -> None:
    """On PostgreSQL a fire awaits its statement between taking a waiter and handing
    it the work: a timeout in between must not strand that work under its lease."""
    n = Notifier()
    waiter = n.subscribe("t1", "a", handoff=Handoff("w1", 9.0))
    waiting = asyncio.ensure_future(waiter.wait(0.01))
    await asyncio.sleep(0)
    assert n.taker("t1", "a") is waiter and waiter.taken
    await asyncio.sleep(0.05)  # well past the timeout
    assert not waiting.done()
    waiter.hand(["row"])
    assert await waiting is True and waiter.handed == ["row"] and not waiter.parked
    # an untaken waiter still times out
    other = n.subscribe("t1", "a", handoff=Handoff("w2", 9.0))
    assert await other.wait(0.01) is False and not other.taken


async def test_only_a_waiting_claim_is_handed_work() -> None:
    """A claim subscribes before it runs its own claim statement (on PostgreSQL an
    await); until it waits, a fire wakes it instead of handing it work, so it never
    leaves with work it was not told of."""
    n = Notifier()
    claiming = n.subscribe("t1", "a", handoff=Handoff("w1", 9.0))
    assert not claiming.parked and n.taker("t1", "a") is None
    n.notify("t1", "a")  # what the fire does instead
    assert claiming.woken and await claiming.wait(5) is True  # it claims again at once
    claiming.close()
    waiting = await parked(n, "t1", "a", handoff=Handoff("w2", 9.0))
    assert n.taker("t1", "a") is waiting
    waiting.hand([])
