"""`AsyncMailbox` tickets and gather end to end (extensions on and off), on anyio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cuemsg import AlreadyCollected, ReplyNotReady, RequestTimeout, Ticket
from cuemsg.cueapi import AsyncCueClient
from cuemsg.mailbox import AsyncMailbox, AsyncMessage
from tests.mailbox.conftest import POLL

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def echo(msg: AsyncMessage[Any]) -> Any:
    return {"echo": msg.body}


async def test_submit_status_collect(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):
        ticket = await a.submit(b.address, "hi", timeout=30)
        assert (await a.status(ticket)).state == "waiting"
        with pytest.raises(ReplyNotReady):
            await a.collect(ticket, wait=0)
        async for msg in b.receive(wait=5, limit=1):
            state = await a.status(ticket)
            assert (state.state, state.worker) == ("in_progress", b.worker_id)
            await msg.reply("there")
        assert (await a.status(ticket)).state == "answered"
        again = await AsyncMailbox.open(aclient, "a")  # another process's view
        assert [t.correlation_id for t in await again.pending()] == [ticket.correlation_id]
        assert await again.collect(Ticket.parse(str(ticket))) == "there"
        with pytest.raises(AlreadyCollected):
            await a.collect(ticket)
        assert (await a.status(ticket)).state == "collected"
        short = await a.submit(b.address, "late", timeout=0.3)
        await anyio.sleep(0.5)
        assert await a.pending() == []
        with pytest.raises(RequestTimeout) as err:
            await a.collect(short)
        assert err.value.reason == "no_responder"
        assert (await a.status(short)).state == "expired"


async def test_gather_all_and_need(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
        AsyncMailbox.open(aclient, "c", poll_wait=POLL) as c,
        AsyncMailbox.open(aclient, "idle", poll_wait=POLL) as idle,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.serve, echo)
            tg.start_soon(c.serve, echo)
            every = await a.gather([b.address, c.address], 1, timeout=20)
            some = await a.gather([b.address, idle.address], 2, timeout=20, need=1)
            b.stop()
            c.stop()
        assert every.replies == {b.address: {"echo": 1}, c.address: {"echo": 1}}
        assert some.replies == {b.address: {"echo": 2}}
        assert some.receipts[idle.address].state == "cancelled"
        handled: list[Any] = []
        await idle.serve(handled.append, idle_timeout=POLL * 2)
        assert handled == []
