"""A request settled without a reply is told to its requester at once, as `NoReply`.

Against the embedded server over real HTTP, extensions on and off. "At once"
is shown without timing anything: the requester's timeout is long, and the
`NoReply` came through its reply stream (`stats.replies_received`), not
from the deadline (`stats.timeouts` stays 0).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest

from cuemsg import AsyncCueClient, AsyncMailbox, CueClient, Mailbox, NoReply, RemoteError
from cuemsg.envelope import outcome_metadata
from cuemsg.mailbox import Settled
from tests.mailbox.conftest import POLL, serving

Open = Callable[..., Mailbox]
LONG = 60.0  # the requesters' timeout: a NoReply comes long before it


class NoReplyHere(Exception):
    """A handler's own error that happens to be called like the notice's type."""


NoReplyHere.__name__ = "NoReply"


@pytest.fixture
def receiving() -> Iterator[Callable[..., threading.Thread]]:
    """Run `settle(msg)` on the first message of a mailbox, in a thread."""
    threads: list[threading.Thread] = []

    def start(mb: Mailbox, settle: Callable[[Any], None], batch: int = 1) -> threading.Thread:
        def run() -> None:
            for msg in mb.receive(wait=10, limit=1, batch=batch):
                settle(msg)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(timeout=15)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_request_acked_without_a_reply_raises_no_reply_at_once(
    mailboxes: Open, receiving: Callable[..., threading.Thread], batch: int
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    thread = receiving(b, lambda msg: msg.ack(), batch)
    with pytest.raises(NoReply) as info:
        a.request(b.address, {"text": "agents talk"}, timeout=LONG)
    thread.join(timeout=10)
    err = info.value
    assert (err.settled, err.worker_id, err.reason) == ("acked", b.worker_id, None)
    assert f"was acked by worker {b.worker_id} without a reply" in str(err)
    assert a.stats.replies_received == 1 and a.stats.timeouts == 0
    assert b.stats.acked == 1


def test_a_request_the_loop_acks_on_moving_on_raises_no_reply(
    client: CueClient, mailboxes: Open, receiving: Callable[..., threading.Thread]
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    receiving(b, lambda msg: None)  # left unsettled: the loop acks it
    with pytest.raises(NoReply, match="acked by worker") as info:
        a.request(b.address, "hello?", timeout=LONG)
    assert a.stats.timeouts == 0
    record = client.executions.get(info.value.execution_id or "")
    assert record.status == "success" and record.claimed_by_worker == b.worker_id


def test_a_rejected_request_raises_no_reply_with_the_reason(
    client: CueClient, mailboxes: Open, receiving: Callable[..., threading.Thread]
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    settled: list[Any] = []

    def reject(msg: Any) -> None:
        msg.reject("not my job")
        settled.append(msg.settled)

    thread = receiving(b, reject)
    with pytest.raises(NoReply) as info:
        a.request(b.address, "do it", timeout=LONG)
    thread.join(timeout=10)
    err = info.value
    assert (err.settled, err.worker_id, err.reason) == ("rejected", b.worker_id, "not my job")
    assert str(err).endswith(
        f"rejected by worker {b.worker_id} without a reply (reason: not my job)"
    )
    assert a.stats.timeouts == 0
    assert settled == [Settled.REJECTED] and b.stats.rejected == 1
    record = client.executions.get(err.execution_id or "")
    assert record.status == "failed" and record.outcome is not None
    assert record.outcome["error"] == "rejected: not my job"


def test_a_request_waiting_in_a_force_deleted_mailbox_raises_no_reply(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(a.request, b.address, "still there?", timeout=LONG)
        while not b.waiting():  # the request is fired once a thread runs it
            time.sleep(0.05)
        assert b.delete(force=True) == 1
        with pytest.raises(NoReply) as info:
            asked.result(timeout=30)
    err = info.value
    assert (err.settled, err.reason) == ("rejected", "the mailbox was deleted")
    assert a.stats.timeouts == 0


def test_a_request_served_and_answered_is_no_no_reply(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with serving(b, lambda msg: {"echo": msg.body}):
        assert a.request(b.address, 1, timeout=LONG) == {"echo": 1}
    assert b.stats.sent == 1  # the reply, and no notice


def test_a_handler_error_called_no_reply_stays_a_remote_error(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")

    def fail(msg: Any) -> None:
        raise NoReplyHere("mine")

    with serving(b, fail), pytest.raises(RemoteError) as info:
        a.request(b.address, 1, timeout=LONG)
    assert not isinstance(info.value, NoReply)
    assert (info.value.type, info.value.message) == ("NoReply", "mine")


def test_the_deadline_reads_a_reply_less_ack_from_the_record(
    client: CueClient, mailboxes: Open
) -> None:
    """A receiver that sends no notice (an older cuemsg): the requester's deadline
    reads the record and still says NoReply, not a timeout."""
    a, b = mailboxes("a"), mailboxes("b")
    old_receiver = "old-cuemsg@elsewhere"
    done = threading.Event()

    def settle_quietly() -> None:
        claimed = client.executions.claim_next(worker_id=old_receiver, task=b.task, wait=5)
        for claim in claimed.executions:
            client.executions.report_outcome(
                claim.execution_id,
                worker_id=old_receiver,
                success=True,
                result="handled",
                metadata=outcome_metadata("acked"),
            )
        done.set()

    thread = threading.Thread(target=settle_quietly, daemon=True)
    thread.start()
    with pytest.raises(NoReply) as info:
        a.request(b.address, "anyone?", timeout=3)
    thread.join(timeout=10)
    assert done.is_set()
    err = info.value
    assert (err.settled, err.worker_id) == ("acked", old_receiver)
    assert a.stats.replies_received == 0  # from the record, at the deadline


@pytest.mark.anyio
async def test_async_ack_and_reject_without_a_reply_raise_no_reply(
    aclient: AsyncCueClient,
) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "b", poll_wait=POLL) as b,
    ):

        async def settle(how: str) -> None:
            async for msg in b.receive(wait=10, limit=1):
                if how == "ack":
                    await msg.ack()
                elif how == "reject":
                    await msg.reject("busy")
                # "leave it": the loop acks it when it moves on

        for how, settled, reason in [
            ("ack", "acked", None),
            ("reject", "rejected", "busy"),
            ("loop", "acked", None),
        ]:
            async with anyio.create_task_group() as tg:
                tg.start_soon(settle, how)
                with pytest.raises(NoReply) as info:
                    await a.request(b.address, how, timeout=LONG)
            err = info.value
            assert (err.settled, err.worker_id, err.reason) == (settled, b.worker_id, reason)
            assert b.worker_id in str(err)
        assert a.stats.replies_received == 3 and a.stats.timeouts == 0
