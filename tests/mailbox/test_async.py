"""`AsyncMailbox` end to end against the embedded server (extensions on and off), on anyio."""

from __future__ import annotations

import functools
import time
from contextlib import AsyncExitStack, aclosing
from typing import Any

import anyio
import pytest

from cuemsg._exceptions import (
    AlreadySettled,
    MailboxError,
    NotFound,
    RemoteError,
    RequestTimeout,
    RetryLater,
)
from cuemsg.cueapi import AsyncCueClient
from cuemsg.mailbox import AsyncMailbox, AsyncMessage, Settled
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import POLL

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both event loops anyio supports (the docs promise both)."""
    return str(request.param)


async def test_open_send_receive(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        again = await AsyncMailbox.open(aclient, "b")
        assert again.address == b.address
        sent = [await a.send(b.address, {"n": i}) for i in range(3)]
        got = [(m.id, m.body) async for m in b.receive(wait=1)]
        assert got == [(s.id, {"n": i}) for i, s in enumerate(sent)]
        await a.send(b.address, "ping")
        async for m in b.receive(wait=5, limit=1):
            await m.reply("pong")
        async for m in a.receive(wait=5, limit=1):
            assert (m.body, m.sender) == ("pong", b.address)
        with pytest.raises(NotFound):
            await a.send("cue_nothere00000", 1)
        batch = await a.send_many(b.address, ["x", "y", "z"])
        assert [m.body async for m in b.receive(wait=1)] == ["x", "y", "z"]
        assert [s.id for s in batch] == sorted(s.id for s in batch)
        exe = await aclient.executions.get(batch[0].execution_id)
        assert exe.status == "success"


async def test_a_reply_is_one_request_with_outcome_reply(
    server: RunningServer, aclient: AsyncCueClient
) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        one = "outcome.reply" in await aclient.load_extensions()
        await a.send(b.address, "ping")
        used, reply_eid = 0, ""
        async for m in b.receive(wait=5, limit=1):
            before = server.requests
            reply_eid = await m.reply("pong")
            used = server.requests - before - 1  # the second /health read counts itself
        assert used == (1 if one else 2)
        exe = await aclient.executions.get(m.execution_id)
        assert exe.outcome is not None
        assert exe.outcome["metadata"]["cuemsg"]["reply_execution_id"] == reply_eid
        async for pong in a.receive(wait=5, limit=1):
            assert (pong.body, pong.execution_id) == ("pong", reply_eid)


async def test_each_reply_is_acked_by_the_next_call(aclient: AsyncCueClient) -> None:
    async def echo(msg: AsyncMessage[Any]) -> Any:
        return msg.body

    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        carried = "claim.settle" in await aclient.load_extensions()
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.serve, echo)
            assert [await a.request(b.address, n, timeout=10) for n in range(4)] == [0, 1, 2, 3]
            b.stop()
        replies = (await aclient.executions.list(cue_id=a.address)).executions
        assert len(replies) == 4
        if carried:  # each reply's ack rode on the claim that fetched the next reply
            assert sum(r.status == "success" for r in replies) >= 3
    replies = (await aclient.executions.list(cue_id=a.address)).executions
    assert [r.status for r in replies] == ["success"] * 4  # the last one at close


async def test_heartbeats_keep_a_message_held_longer_than_its_lease(
    short_lease_server: RunningServer,
) -> None:
    srv = short_lease_server
    async with (
        AsyncCueClient(srv.new_key(), srv.base_url) as client,
        AsyncMailbox.open(client, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(client, "b", poll_wait=POLL) as b,
    ):
        sent = await a.send(b.address, "held")
        async for _ in b.receive(wait=5, limit=1):
            # Leases of 1 s: renewed every third of a second only if taking the lease woke
            # the heartbeat task (by itself it sleeps up to a second).
            await anyio.sleep(2.5)
        exe = await client.executions.get(sent.execution_id)
        assert exe.status == "success" and exe.attempts == 1
        assert b.stats.acked == 1 and b.stats.redelivered == 0


async def test_settling_twice_raises_already_settled(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        await a.send(b.address, "once")
        async for msg in b.receive(wait=5, limit=1):
            await msg.ack()
            with pytest.raises(AlreadySettled, match=r"already settled \(acked\)") as info:
                await msg.reject("too late")
            assert (info.value.message_id, info.value.settled) == (msg.id, Settled.ACKED)
            assert msg.settled is Settled.ACKED
        assert b.stats.acked == 1 and b.stats.rejected == 0


async def test_a_send_that_would_be_dead_on_arrival_is_refused(aclient: AsyncCueClient) -> None:
    async with AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a:
        with pytest.raises(ValueError, match="ttl must be > 0 seconds, not 0"):
            await a.send(a.address, "x", ttl=0)
        with pytest.raises(TypeError, match="thread must be a string"):
            await a.request(a.address, "x", timeout=1, thread=7)  # type: ignore[call-overload]
        assert (await aclient.executions.list()).executions == []  # nothing was fired
        with pytest.raises(ValueError, match="wait must be >= 0, not -1"):
            async for _ in a.receive(wait=-1):
                pass


async def test_background_work_needs_the_mailbox_entered(aclient: AsyncCueClient) -> None:
    mb = await AsyncMailbox.open(aclient, "a")
    await mb.send(mb.address, "to myself")  # sending needs no background task
    with pytest.raises(MailboxError, match="enter the mailbox first"):
        await mb.request(mb.address, 1, timeout=1)
    async with mb:
        async for m in mb.receive(wait=5, limit=1):
            assert m.body == "to myself"
    with pytest.raises(MailboxError, match="closed"):
        await mb.request(mb.address, 1, timeout=1)


async def test_fifty_outstanding_requests_three_responders(aclient: AsyncCueClient) -> None:
    async def handler(msg: AsyncMessage[Any]) -> Any:
        await anyio.sleep(0.01)
        return {"n": msg.body}

    results: dict[int, Any] = {}
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(AsyncMailbox.open(aclient, "client", poll_wait=POLL))
        workers = [
            await stack.enter_async_context(
                AsyncMailbox.open(aclient, "svc", worker_id=f"w{i}", poll_wait=POLL)
            )
            for i in range(3)
        ]

        async def ask(n: int) -> None:
            results[n] = await a.request(workers[0].address, n, timeout=30)

        async with anyio.create_task_group() as serving:
            for w in workers:
                serving.start_soon(functools.partial(w.serve, handler, concurrency=8))
            async with anyio.create_task_group() as asking:
                for n in range(50):
                    asking.start_soon(ask, n)
            for w in workers:
                w.stop()
        assert results == {n: {"n": n} for n in range(50)}
        assert sum(w.stats.replied for w in workers) == 50
        assert a.pending_requests == 0


async def test_errors_timeouts_and_late_replies(aclient: AsyncCueClient) -> None:
    late: list[AsyncMessage[Any]] = []

    async def on_late(msg: AsyncMessage[Any]) -> None:
        late.append(msg)

    async def handler(msg: AsyncMessage[Any]) -> Any:
        if msg.body == "boom":
            raise ValueError("bad input")
        if msg.body == "slow":
            await anyio.sleep(1.8)
        return msg.body

    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL, on_late_reply=on_late) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        with pytest.raises(RequestTimeout) as info:
            await a.request(b.address, "nobody home", timeout=0.3)
        assert info.value.reason == "no_responder"
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: b.serve(handler, concurrency=2))
            with pytest.raises(RemoteError) as err:
                await a.request(b.address, "boom", timeout=10)
            assert (err.value.type, err.value.message) == ("ValueError", "bad input")
            with pytest.raises(RequestTimeout) as slow:
                await a.request(b.address, "slow", timeout=0.9)
            assert slow.value.reason == "slow_responder"
            await anyio.sleep(1.2)
            assert await a.request(b.address, "fast", timeout=10) == "fast"
            b.stop()
        assert b.stats.expired == 1  # "nobody home" was skipped when b came up
    assert [m.body for m in late] == ["slow"]  # picked up by the next request, or at close


async def test_retry_later_and_bad_messages(aclient: AsyncCueClient) -> None:
    seen: list[tuple[Any, int]] = []

    async def handler(msg: AsyncMessage[Any]) -> None:
        seen.append((msg.body, msg.attempt))
        if msg.attempt == 1 and msg.body == "again":
            raise RetryLater(0.1)

    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        bad = await aclient.cues.fire(b.address, {"message": 1, "cuemsg": {"v": 7, "id": "x"}})
        await a.send(b.address, "again")
        await a.send(b.address, "once")
        started = time.monotonic()
        await b.serve(handler, idle_timeout=1)
        assert time.monotonic() - started < 10
        assert seen == [("again", 1), ("once", 1), ("again", 2)]
        exe = await aclient.executions.get(bad.id)
        assert exe.status == "failed" and "newer" in exe.outcome["error"]


async def test_batches(server: RunningServer, aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
        AsyncMailbox.open(aclient, "c", poll_wait=POLL) as c,
    ):
        used: dict[int, int] = {}
        for batch in (1, 10):
            sent = await a.send_many(b.address, list(range(30)))
            before = server.requests
            assert [m.body async for m in b.receive(wait=1, limit=30, batch=batch)] == list(
                range(30)
            )
            used[batch] = server.requests - before
            statuses = {(await aclient.executions.get(s.execution_id)).status for s in sent}
            assert statuses == {"success"}
        assert used[10] < used[1] and b.stats.acked == 60
        # Leaving the loop early records the acks already decided.
        sent = await a.send_many(b.address, list(range(5)))
        async with aclosing(b.receive(wait=1, batch=5)) as messages:
            async for m in messages:
                if m.body == 2:
                    break
        in_order = [(await aclient.executions.get(s.execution_id)).status for s in sent]
        assert in_order[:2] == ["success"] * 2 and "success" not in in_order[2:]
        # serve() records the acks of handlers that finish together in one request.
        sent = await a.send_many(c.address, list(range(100)))
        handled: list[int] = []

        async def handler(msg: AsyncMessage[Any]) -> None:
            await anyio.sleep(0.002)
            handled.append(msg.body)

        before = server.requests
        await c.serve(handler, concurrency=8, idle_timeout=0.5)
        used_serve = server.requests - before
        assert sorted(handled) == list(range(100)) and c.stats.acked == 100
        assert used_serve < 300
        if "outcome.batch" in aclient.extensions:
            assert used_serve < 100
        statuses = {(await aclient.executions.get(s.execution_id)).status for s in sent}
        assert statuses == {"success"}
