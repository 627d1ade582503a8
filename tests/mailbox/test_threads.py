"""Threads end to end against the embedded server (extensions on and off), sync and async:
one handler at a time per thread under `serve(concurrency=8)`, the busy policies and
what their outcomes record, and `history()` in both directions.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuemsg._exceptions import RemoteError, RequestTimeout
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import AsyncMailbox, AsyncMessage, Mailbox, Message
from tests.mailbox.conftest import POLL, serving

Open = Callable[..., Mailbox]
WAIT = 20.0  # the longest any step here may take before the test fails


def cuemsg_meta(client: CueClient, execution_id: str) -> dict[str, Any]:
    """The `cuemsg` part of an execution's outcome metadata (what the mailbox did)."""
    exe = client.executions.get(execution_id)
    assert exe.outcome is not None, f"execution {execution_id} has no outcome ({exe.status})"
    meta: dict[str, Any] = exe.outcome["metadata"]["cuemsg"]
    return meta


class Recorder:
    """A handler that records each message's thread and body, checking one runs per thread."""

    def __init__(self, expected: int, hold: float = 0.0) -> None:
        self.expected = expected
        self.hold = hold
        self.lock = threading.Lock()
        self.running: dict[str, int] = defaultdict(int)
        self.order: dict[str, list[Any]] = defaultdict(list)
        self.overlaps: list[str] = []
        self.done = threading.Event()

    def __call__(self, msg: Message[Any]) -> None:
        thread = msg.thread or ""
        with self.lock:
            self.running[thread] += 1
            if self.running[thread] > 1:
                self.overlaps.append(thread)
        time.sleep(self.hold * random.random())
        with self.lock:
            self.running[thread] -= 1
            self.order[thread].append(msg.body)
            if sum(len(v) for v in self.order.values()) >= self.expected:
                self.done.set()


# -- one handler per thread, in order -----------------------------------------------------


def test_threads_run_one_at_a_time_in_order_and_side_by_side(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    # The first message of t0 waits for t1's first: they can only meet running side by side.
    met = threading.Barrier(2, timeout=WAIT)
    rec = Recorder(expected=24, hold=0.02)

    def handler(msg: Message[Any]) -> None:
        if msg.body in ({"t": "t0", "n": 0}, {"t": "t1", "n": 0}):
            met.wait()
        rec(msg)

    sent = {}
    for n in range(6):
        for t in ("t0", "t1", "t2", "t3"):
            sent[(t, n)] = a.send(b.address, {"t": t, "n": n}, thread=t)
    with serving(b, handler, concurrency=8):
        assert rec.done.wait(WAIT)
    assert rec.overlaps == []
    for t in ("t0", "t1", "t2", "t3"):
        assert rec.order[t] == [{"t": t, "n": n} for n in range(6)]
    # A message that waited for its thread says so in its record, naming the one before it.
    queued = [cuemsg_meta(client, s.execution_id) for s in sent.values()]
    assert all(m["state"] == "acked" for m in queued)
    for m in queued:
        if "busy" in m:
            assert m["busy"] == "queued" and m["queued_behind"]


def test_any_interleaving_of_sends_keeps_per_thread_order(mailboxes: Open) -> None:
    a = mailboxes("a")
    rounds = iter(range(1000))

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=14))
    def check(threads: list[str]) -> None:
        b = mailboxes(f"b{next(rounds)}")
        for n, t in enumerate(threads):
            a.send(b.address, n, thread=t)
        rec = Recorder(expected=len(threads), hold=0.01)
        with serving(b, rec, concurrency=8):
            assert rec.done.wait(WAIT)
        assert rec.overlaps == []
        for t in set(threads):
            assert rec.order[t] == [n for n, u in enumerate(threads) if u == t]

    check()


def test_on_busy_is_checked(mailboxes: Open) -> None:
    b = mailboxes("b")
    with pytest.raises(ValueError, match="on_busy must be one of 'queue', 'reject', 'interrupt'"):
        b.serve(lambda m: None, on_busy="drop")  # type: ignore[arg-type]


# -- the busy policies ----------------------------------------------------------------------


def test_reject_answers_busy_and_records_it(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    started, release = threading.Event(), threading.Event()

    def handler(msg: Message[Any]) -> str:
        if msg.body == "long":
            started.set()
            assert release.wait(WAIT)
        return "done"

    with serving(b, handler, concurrency=4, on_busy="reject"):
        first = a.send(b.address, "long", thread="t")
        assert started.wait(WAIT)
        second = a.send(b.address, "also", thread="t")
        with pytest.raises(RemoteError) as err:
            a.request(b.address, "and this?", thread="t", timeout=WAIT)
        assert err.value.type == "busy" and "thread 't'" in err.value.message
        other = a.request(b.address, "another thread", thread="u", timeout=WAIT)
        assert other == "done"
        release.set()
        deadline = time.monotonic() + WAIT
        while client.executions.get(first.execution_id).status != "success":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    turned = client.executions.get(second.execution_id)
    assert turned.status == "failed" and turned.outcome is not None
    assert "busy" in turned.outcome["error"]
    assert cuemsg_meta(client, second.execution_id) | {"id": None} == {
        "state": "rejected",
        "id": None,
        "kind": "message",
        "busy": "rejected",
    }
    assert "busy" not in cuemsg_meta(client, first.execution_id)


def test_interrupt_cancels_the_running_handler_then_runs_the_new_one(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    started = threading.Event()
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def handler(msg: Message[Any]) -> None:
        if msg.body == "long":
            started.set()
            seen.append(("long", msg.cancelled.wait(WAIT)))
        else:
            seen.append((msg.body, msg.cancelled.is_set()))
            done.set()

    with serving(b, handler, concurrency=4, on_busy="interrupt"):
        first = a.send(b.address, "long", thread="t")
        assert started.wait(WAIT)
        second = a.send(b.address, "newer", thread="t")
        assert done.wait(WAIT)
    assert seen == [("long", True), ("newer", False)]
    assert cuemsg_meta(client, first.execution_id)["busy"] == "interrupted"
    assert cuemsg_meta(client, first.execution_id)["interrupted_by"] == second.id
    assert cuemsg_meta(client, second.execution_id)["busy"] == "queued_after_interrupt"


def test_queue_records_whom_a_message_waited_for(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    started, release, done = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def handler(msg: Message[Any]) -> None:
        order.append(msg.body)
        if msg.body == "long":
            started.set()
            assert release.wait(WAIT)
        else:
            done.set()

    with serving(b, handler, concurrency=4):
        first = a.send(b.address, "long", thread="t")
        assert started.wait(WAIT)
        second = a.send(b.address, "next", thread="t")
        time.sleep(3 * POLL)  # claimed meanwhile, and held: its handler must not start
        assert order == ["long"]
        release.set()
        assert done.wait(WAIT)
    assert order == ["long", "next"]
    meta = cuemsg_meta(client, second.execution_id)
    assert meta["busy"] == "queued" and meta["queued_behind"] == first.id


# -- history ----------------------------------------------------------------------------------


def test_history_has_both_directions_with_their_records(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    hello = a.send(b.address, "hello", thread="h")
    a.send(b.address, "not in the thread", thread="other")
    for msg in b.receive(wait=5, limit=2):
        if msg.thread == "h":
            msg.reply("hi")
    [hi] = list(a.receive(wait=5, limit=1))
    with serving(b, lambda m: f"answer to {m.body}"):
        assert a.request(b.address, "question", thread="h", timeout=WAIT) == "answer to question"
    # Nothing came back for this one yet; this process remembers where it went.
    pending = a.send(b.address, "still waiting", thread="h")

    mine = a.history("h")
    assert [(e.direction, e.kind, e.body) for e in mine] == [
        ("out", "message", "hello"),
        ("in", "message", "hi"),
        ("out", "request", "question"),
        ("in", "reply", "answer to question"),
        ("out", "message", "still waiting"),
    ]
    first = mine[0]
    assert (first.id, first.execution_id, first.status) == (hello.id, hello.execution_id, "success")
    assert first.claimed_by == b.worker_id and first.attempts == 1
    assert first.outcome == "replied" and first.reply_execution_id is not None
    assert mine[1].execution_id == first.reply_execution_id and mine[1].outcome == "acked"
    assert mine[2].outcome == "replied" and mine[3].correlation_id == mine[2].correlation_id
    assert mine[4].id == pending.id and mine[4].status == "pending" and mine[4].outcome is None
    assert all(e.sender == (a.address if e.direction == "out" else b.address) for e in mine)
    assert all(e.sender_name == ("a" if e.direction == "out" else "b") for e in mine)

    # The other side sees the same thread mirrored, from its own cue and a's.
    theirs = b.history("h")
    assert [(e.direction, e.body) for e in theirs] == [
        ("in", "hello"),
        ("out", "hi"),
        ("in", "question"),
        ("out", "answer to question"),
        ("in", "still waiting"),
    ]
    assert [e.body for e in a.history("h", limit=2)] == ["answer to question", "still waiting"]
    assert hi.thread == "h"
    # A fresh process (no memory of where it sent what) finds the thread through the
    # senders on its own cue; `peers` names a cue that never answered.
    c = mailboxes("c")
    a.send(c.address, "unanswered", thread="h2")
    fresh = Mailbox.open(client, "a", poll_wait=POLL)
    try:
        assert [e.body for e in fresh.history("h")] == [e.body for e in mine]
        assert fresh.history("h2") == []
        assert [e.body for e in fresh.history("h2", peers=[c.address])] == ["unanswered"]
    finally:
        fresh.close()


def test_history_shows_an_unanswered_request(mailboxes: Open) -> None:
    a, nobody = mailboxes("a"), mailboxes("nobody")
    with pytest.raises(RequestTimeout):
        a.request(nobody.address, "anyone?", thread="q", timeout=0.5)
    [entry] = a.history("q")
    assert (entry.direction, entry.kind, entry.body, entry.cue_id) == (
        "out",
        "request",
        "anyone?",
        nobody.address,
    )
    assert entry.status == "pending" and entry.claimed_by is None and entry.outcome is None


def test_history_arguments_are_checked(mailboxes: Open) -> None:
    a = mailboxes("a")
    with pytest.raises(ValueError, match="needs a thread id"):
        a.history("")
    with pytest.raises(ValueError, match="limit must be >= 1, not 0"):
        a.history("h", limit=0)
    with pytest.raises(ValueError, match="scan must be >= 1, not 0"):
        a.history("h", scan=0)
    assert a.history("nothing here") == []


# -- async ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_threads_order_and_busy_policies(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        order: dict[str, list[int]] = defaultdict(list)
        running: dict[str, int] = defaultdict(int)
        overlaps: list[str] = []
        done = anyio.Event()

        async def handler(msg: AsyncMessage[Any]) -> None:
            t = msg.thread or ""
            running[t] += 1
            if running[t] > 1:
                overlaps.append(t)
            await anyio.sleep(0.01 * random.random())
            running[t] -= 1
            order[t].append(msg.body)
            if sum(map(len, order.values())) == 12:
                done.set()

        for n in range(4):
            for t in ("x", "y", "z"):
                await a.send(b.address, n, thread=t)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: b.serve(handler, concurrency=8))
            with anyio.fail_after(WAIT):
                await done.wait()
            b.stop()
        assert overlaps == [] and all(order[t] == [0, 1, 2, 3] for t in "xyz")


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["reject", "interrupt"])
async def test_async_busy_policies(aclient: AsyncCueClient, policy: str) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, f"b-{policy}", poll_wait=POLL) as b,
    ):
        started, release = anyio.Event(), anyio.Event()
        seen: list[tuple[Any, bool]] = []

        async def handler(msg: AsyncMessage[Any]) -> str:
            if msg.body == "long":
                started.set()
                with anyio.move_on_after(WAIT):
                    await (msg.cancelled.wait() if policy == "interrupt" else release.wait())
            seen.append((msg.body, msg.cancelled.is_set()))
            return "done"

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: b.serve(handler, concurrency=4, on_busy=policy))  # type: ignore[arg-type]
            await a.send(b.address, "long", thread="t")
            with anyio.fail_after(WAIT):
                await started.wait()
            if policy == "reject":
                with pytest.raises(RemoteError) as err:
                    await a.request(b.address, "now?", thread="t", timeout=WAIT)
                assert err.value.type == "busy"
                release.set()
            else:
                assert await a.request(b.address, "newer", thread="t", timeout=WAIT) == "done"
            b.stop()
        if policy == "reject":
            assert seen == [("long", False)]
        else:
            assert seen == [("long", True), ("newer", False)]


@pytest.mark.anyio
async def test_async_history(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        await a.send(b.address, "hello", thread="h")
        async for msg in b.receive(wait=5, limit=1):
            await msg.reply("hi")
        async for _ in a.receive(wait=5, limit=1):
            pass
        got = await a.history("h")
        assert [(e.direction, e.body, e.outcome) for e in got] == [
            ("out", "hello", "replied"),
            ("in", "hi", "acked"),
        ]
        with pytest.raises(ValueError, match="limit must be >= 1"):
            await a.history("h", limit=-1)
