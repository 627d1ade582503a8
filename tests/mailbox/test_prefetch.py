"""Prefetching: receive() and serve() claim a backlog ahead (`prefetch=`), hand it
out in order, give back what they did not hand out (`executions.release`), and
cost two requests a message when there is no backlog (on both server modes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import AsyncMailbox, Mailbox, Message
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import POLL

Open = Callable[..., Mailbox]


def test_prefetch_hands_out_a_backlog_in_order_with_one_claim(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send_many(b.address, list(range(20)))
    before = server.requests
    got = [m.body for m in b.receive(wait=0.5, limit=20)]  # the default prefetch
    used = server.requests - before
    assert got == list(range(20))
    assert {client.executions.get(s.execution_id).status for s in sent} == {"success"}
    if "executions.release" in client.extensions:
        assert used <= 3  # one claim took all twenty; their acks went together
    assert b.stats.acked == 20 and len(b._core.leases) == 0 and not b._core.acks


def test_with_no_backlog_a_message_costs_two_requests(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    n = 10
    got: list[Any] = []
    arrived = threading.Semaphore(0)

    def receiver() -> None:
        for msg in b.receive(wait=3, limit=n):
            got.append(msg.body)
            arrived.release()

    list(b.receive(wait=0))  # the extensions are read before the count
    before = server.requests
    thread = threading.Thread(target=receiver)
    thread.start()
    for i in range(n):
        a.send(b.address, i)  # one at a time: the receiver never finds a backlog
        assert arrived.acquire(timeout=10)
    thread.join(10)
    assert got == list(range(n))
    if "claim.settle" in client.extensions:
        # Each message: its fire, and the claim that takes it (carrying the ack before
        # it); one more claim parked at the start, and the last ack's own request.
        assert server.requests - before <= 2 * n + 2


def test_serve_claims_no_more_than_its_free_slots_or_prefetch(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    limits: list[int | None] = []
    claim_next = client.executions.claim_next

    def spy(**kwargs: Any) -> Any:
        limits.append(kwargs["limit"])
        return claim_next(**kwargs)

    client.executions.claim_next = spy  # type: ignore[method-assign]
    slots = 0
    running: list[int] = []
    lock = threading.Lock()

    def handler(msg: Message[Any]) -> None:
        with lock:
            running.append(msg.body)
            assert len(running) <= slots  # never more handlers than slots
        time.sleep(0.01)
        with lock:
            running.remove(msg.body)

    slots = 3
    a.send_many(b.address, list(range(12)))
    b.serve(handler, concurrency=3, prefetch=10, idle_timeout=0.5)
    assert limits and max(limit or 1 for limit in limits) <= 3
    assert b.stats.acked == 12 and not b.stats.handler_errors
    limits.clear()
    a.send_many(b.address, list(range(8)))
    slots = 4
    b.serve(handler, concurrency=4, prefetch=2, idle_timeout=0.5)
    assert limits and max(limit or 1 for limit in limits) <= 2
    assert b.stats.acked == 20 and not b.stats.handler_errors
    with pytest.raises(ValueError):
        b.serve(handler, prefetch=0)


def test_prefetch_and_batch_are_one_setting(mailboxes: Open) -> None:
    b = mailboxes("b")
    with pytest.raises(ValueError):
        list(b.receive(wait=0, prefetch=2, batch=3))
    with pytest.raises(ValueError):
        list(b.receive(wait=0, prefetch=0))
    assert list(b.receive(wait=0, prefetch=4, batch=4)) == []


def test_async_stop_gives_back_what_was_not_handed_out(
    server: RunningServer, client: CueClient
) -> None:
    async def main() -> None:
        async with (
            AsyncCueClient(client.api_key, server.base_url) as aclient,
            AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
            AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
        ):
            sent = await a.send_many(b.address, list(range(6)))
            got = []
            async for msg in b.receive(wait=2, prefetch=6):
                got.append(msg.body)
                b.stop()
            assert got == [0] and not b._core.prefetched and len(b._core.leases) == 0
            records = [await aclient.executions.get(s.execution_id) for s in sent]
            assert records[0].status == "success"
            if "executions.release" in await aclient.load_extensions():
                assert {(r.status, r.attempts) for r in records[1:]} == {("pending", 0)}

    anyio.run(main)
