"""`reply_to_execution` / `areply_to_execution`: answering a request by its execution id."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from cuemsg import MailboxError, NotFound, RemoteError
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.envelope import ErrorBody
from cuemsg.mailbox import Mailbox
from cuemsg.mailbox.answer import (
    DEFAULT_REPLY_WORKER,
    areply_to_execution,
    reply_to_execution,
)
from cuemsg.testing import RunningServer


def _ask(requester: Mailbox, to: str, body: Any, pool: ThreadPoolExecutor) -> Future[Any]:
    return pool.submit(requester.request, to, body, timeout=20)


def _pending_request(client: CueClient, inbox: Mailbox) -> str:
    """The execution id of the one request waiting in `inbox` (polled until it is there)."""
    for _ in range(200):
        found = client.executions.list(cue_id=inbox.address).executions
        if found:
            return found[0].id
        threading.Event().wait(0.02)
    raise AssertionError("the request never arrived")


def test_reply_to_a_claimed_request(client: CueClient, mailboxes: Callable[..., Mailbox]) -> None:
    inbox, requester = mailboxes("answer-inbox"), mailboxes("answer-asker")
    with ThreadPoolExecutor(1) as pool:
        asked = _ask(requester, inbox.address, {"q": 1}, pool)
        eid = _pending_request(client, inbox)
        client.executions.claim(eid, worker_id="holder-1")
        done = reply_to_execution(client, eid, {"a": 42})
        assert asked.result(timeout=20) == {"a": 42}
    assert (done.execution_id, done.reply_cue_id) == (eid, requester.address)
    execution = client.executions.get(eid)
    assert (execution.status, execution.claimed_by_worker) == ("success", "holder-1")
    outcome = execution.outcome or {}
    assert outcome["result"].startswith(
        f"replied: reply sent as execution {done.reply_execution_id}"
    )
    reply = client.executions.get(done.reply_execution_id).payload or {}
    assert reply["cuemsg"]["kind"] == "reply"
    assert reply["cuemsg"]["correlation_id"] == done.correlation_id
    assert reply["cuemsg"]["sender"] == inbox.address


def test_reply_to_an_unclaimed_request_claims_it_first(
    client: CueClient, mailboxes: Callable[..., Mailbox]
) -> None:
    inbox, requester = mailboxes("unclaimed-inbox"), mailboxes("unclaimed-asker")
    with ThreadPoolExecutor(1) as pool:
        asked = _ask(requester, inbox.address, "ping", pool)
        eid = _pending_request(client, inbox)
        reply_to_execution(client, eid, error=ErrorBody(type="Busy", message="try tomorrow"))
        with pytest.raises(RemoteError) as raised:
            asked.result(timeout=20)
    assert (raised.value.type, raised.value.message) == ("Busy", "try tomorrow")
    execution = client.executions.get(eid)
    assert (execution.status, execution.claimed_by_worker) == ("failed", DEFAULT_REPLY_WORKER)


def test_what_cannot_be_replied_to(client: CueClient, mailboxes: Callable[..., Mailbox]) -> None:
    inbox, sender = mailboxes("plain-inbox"), mailboxes("plain-sender")
    sent = sender.send(inbox.address, "just news")
    with pytest.raises(MailboxError, match="is a message, not a request: it has nobody waiting"):
        reply_to_execution(client, sent.execution_id, "hi")
    client.executions.claim(sent.execution_id, worker_id="w")
    client.executions.report_outcome(sent.execution_id, worker_id="w", success=True)
    with pytest.raises(MailboxError, match="is success: it is settled already"):
        reply_to_execution(client, sent.execution_id, "hi")
    with pytest.raises(NotFound):
        reply_to_execution(client, "00000000-0000-0000-0000-000000000000", "hi")


@pytest.mark.anyio
async def test_async_twin(server: RunningServer) -> None:
    key = server.new_key()
    async with AsyncCueClient(key, server.base_url) as aclient:
        with (
            CueClient(key, server.base_url) as client,
            Mailbox.open(client, "async-inbox") as inbox,
            Mailbox.open(client, "async-asker", poll_wait=0.3) as requester,
            ThreadPoolExecutor(1) as pool,
        ):
            asked = _ask(requester, inbox.address, [1, 2], pool)
            eid = _pending_request(client, inbox)
            done = await areply_to_execution(aclient, eid, 3)
            assert asked.result(timeout=20) == 3
        assert done.execution_id == eid
        assert (await aclient.executions.get(eid)).status == "success"
