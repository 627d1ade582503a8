"""`Mailbox.redrive` and `AsyncMailbox.redrive`: a dead letter sent again, once,
linked both ways; a plain CueAPI (no `executions.redrive`) says so clearly."""

from __future__ import annotations

import pytest

from cuemsg._exceptions import Conflict, ExtensionNotAvailable, NotFound
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import AsyncMailbox, Mailbox
from tests.mailbox.conftest import POLL


def test_redrive_sends_a_dead_letter_again_once(client: CueClient) -> None:
    with (
        Mailbox.open(client, "rd-a", poll_wait=POLL) as a,
        Mailbox.open(client, "rd-b", poll_wait=POLL) as b,
    ):
        sent = a.send(b.address, {"job": 1}, thread="t")
        first = next(iter(b.receive(wait=5, limit=1)))
        first.reject("not now")
        if "executions.redrive" not in client.extensions:
            with pytest.raises(ExtensionNotAvailable, match=r"executions\.redrive"):
                a.redrive(sent.execution_id)
            return
        done = a.redrive(sent.execution_id)
        assert done.redriven and done.execution_id == sent.execution_id
        again = a.redrive(sent.execution_id)
        assert (again.redriven, again.redriven_to) == (False, done.redriven_to)
        second = next(iter(b.receive(wait=5, limit=1)))
        assert second.execution_id == done.redriven_to
        assert (second.id, second.body, second.thread) == (sent.id, {"job": 1}, "t")
        assert second.meta is not None and second.meta.redrive_of == sent.execution_id
        assert second.attempt == 2
        second.ack()
        with pytest.raises(Conflict, match="not a dead letter"):
            a.redrive(done.redriven_to)
        with pytest.raises(NotFound):
            a.redrive("00000000-0000-0000-0000-000000000000")
    assert client.executions.get(sent.execution_id).redriven_to == done.redriven_to
    assert client.executions.get(done.redriven_to).redrive_of == sent.execution_id


@pytest.mark.anyio
async def test_async_redrive_alike(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "ard-a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "ard-b", poll_wait=POLL) as b,
    ):
        sent = await a.send(b.address, "x")
        async for msg in b.receive(wait=5, limit=1):
            await msg.reject("no")
        if "executions.redrive" not in await aclient.load_extensions():
            with pytest.raises(ExtensionNotAvailable):
                await a.redrive(sent.execution_id)
            return
        done = await a.redrive(sent.execution_id)
        assert done.redriven
        assert not (await a.redrive(sent.execution_id)).redriven
        async for msg in b.receive(wait=5, limit=1):
            assert msg.execution_id == done.redriven_to and msg.body == "x"
            await msg.ack()
