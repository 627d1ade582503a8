"""The thread gate of `serve()` with no I/O: dispatch stepped op by op, and its edge cases."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from cuemsg.cueapi.models import Claimed
from cuemsg.envelope import Meta, decode_payload
from cuemsg.mailbox._ops import Flow, HoldSlot, ReleaseSlot, Spawn
from cuemsg.mailbox._records import Delivery
from cuemsg.mailbox._thread_state import ThreadGate
from tests.mailbox.test_core import ME, claimed, make_core, message, run


def in_thread(mid: str, thread: str = "t") -> Claimed:
    return claimed(message(Meta(id=mid, thread=thread), body=mid), eid=f"e-{mid}")


def delivery(c: Claimed) -> Delivery[Any]:
    env = decode_payload(c.payload)
    return Delivery(body=env.message, envelope=env, claimed=c, mailbox_address=ME)


def test_a_failing_turn_frees_its_thread_and_lets_the_waiting_go() -> None:
    """A handler flow that raises is impossible through `handle()` (it settles what it can);
    a `run` that raises stands in for such a bug, to show serving would go on."""
    core = make_core()
    first, second = in_thread("m1"), in_thread("m2")
    core.leases.hold(second.execution_id, 30, 0.0)

    def failing(c: Claimed) -> Flow[None]:
        raise RuntimeError(f"bug while handling {c.execution_id}")
        yield  # a generator, as every flow

    _, ops = run(core.dispatch(first, failing, "queue"), lambda op: None)
    [spawn] = ops
    assert isinstance(spawn, Spawn)
    _, ops = run(core.dispatch(second, failing, "queue"), lambda op: None)
    assert [type(op) for op in ops] == [HoldSlot]
    asked: list[Any] = []
    with pytest.raises(RuntimeError, match="bug while handling e-m1"):
        run(spawn.flow, asked.append)
    assert [type(op) for op in asked] == [ReleaseSlot]  # the slot `second` held
    _, ops = run(core.dispatch(second, failing, "queue"), lambda op: None)
    assert [type(op) for op in ops] == [Spawn]  # the thread is idle again
    assert second.execution_id not in core.leases


def test_turns_run_in_order_and_give_back_each_slot() -> None:
    core = make_core()
    ran: list[str] = []

    def record(c: Claimed) -> Flow[None]:
        ran.append(c.execution_id)
        yield from ()

    first, *rest = [in_thread(f"m{i}") for i in range(3)]
    _, [spawn] = run(core.dispatch(first, record, "queue"), lambda op: None)
    for c in rest:
        run(core.dispatch(c, record, "queue"), lambda op: None)
    _, ops = run(spawn.flow, lambda op: None)
    assert ran == ["e-m0", "e-m1", "e-m2"]
    assert [type(op) for op in ops] == [ReleaseSlot, ReleaseSlot]


def test_an_interrupt_before_the_running_message_is_known_reaches_it() -> None:
    gate = ThreadGate()
    first, newer = in_thread("m1"), in_thread("m2")
    assert gate.enter("t", first, wait=True)
    assert not gate.enter("t", newer, wait=True)
    gate.interrupt("t", newer)  # m1 is still being read: nothing to set yet
    msg = delivery(first)
    gate.started(msg)
    assert msg.cancelled.is_set()
    assert msg.notes == {"busy": "interrupted", "interrupted_by": "m2"}
    assert gate.next("t") is newer
    waiting = delivery(newer)
    gate.started(waiting)
    assert not waiting.cancelled.is_set()  # an interrupt concerns the one running then
    assert waiting.notes == {"busy": "queued_after_interrupt"}
    assert gate.next("t") is None


def test_an_interrupt_of_an_idle_thread_does_nothing() -> None:
    gate = ThreadGate()
    gate.interrupt("t", in_thread("m1"))
    assert gate.enter("t", in_thread("m1"), wait=True)


def test_the_cancelled_event_is_made_once_on_first_use() -> None:
    # Made on first use, not per message: every ask gets the same event, from any thread.
    msg = delivery(in_thread("m1"))
    assert "_cancelled" not in vars(msg)
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(msg.cancelled)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(msg.cancelled, threading.Event) and not msg.cancelled.is_set()
    assert all(event is msg.cancelled for event in seen)
    given = threading.Event()
    env = decode_payload(in_thread("m2").payload)
    made = Delivery(
        body=None, envelope=env, claimed=in_thread("m2"), mailbox_address=ME, cancelled=given
    )
    assert made.cancelled is given


@pytest.mark.anyio
async def test_an_async_message_gets_an_anyio_event() -> None:
    from cuemsg.mailbox._message import AsyncMessage

    c = in_thread("m1")
    env = decode_payload(c.payload)
    msg: AsyncMessage[Any] = AsyncMessage(
        None,  # type: ignore[arg-type]  # no verb is called: only the event is read
        body=env.message,
        envelope=env,
        claimed=c,
        mailbox_address=ME,
    )
    event = msg.cancelled
    assert isinstance(event, anyio.Event) and msg.cancelled is event
    event.set()
    await event.wait()
