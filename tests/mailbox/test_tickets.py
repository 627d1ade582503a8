"""Durable requests end to end against the embedded server (extensions on and off).

`submit` / `collect` / `status` / `pending` / `sweep` with `Mailbox`, a
requester process SIGKILLed after `submit`, and `Ticket`'s text form.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cuemsg import (
    AlreadyCollected,
    MailboxError,
    NoReply,
    RemoteError,
    ReplyNotReady,
    RequestTimeout,
    Ticket,
)
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import serving

Open = Callable[..., Mailbox]


def echo(msg: Message[Any]) -> Any:
    if msg.body == "boom":
        raise ValueError("no such thing")
    return {"echo": msg.body}


def test_submit_collect_exactly_once(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with serving(b, echo):
        ticket = a.submit(b.address, "hi", timeout=30)
        assert Ticket.parse(str(ticket)) == ticket
        assert a.collect(ticket) == {"echo": "hi"}
        with pytest.raises(AlreadyCollected) as err:
            a.collect(ticket)
    assert err.value.collected_by == a.worker_id
    assert a.worker_id in str(err.value) and err.value.collected_at in str(err.value)
    state = a.status(ticket)
    assert (state.state, state.collected_by) == ("collected", a.worker_id)
    assert a.pending() == []


def test_error_reply_raises_remote_error_once(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with serving(b, echo):
        ticket = a.submit(b.address, "boom", timeout=30)
        with pytest.raises(RemoteError) as err:
            a.collect(ticket)
    assert (err.value.type, err.value.message) == ("ValueError", "no such thing")
    with pytest.raises(AlreadyCollected):
        a.collect(ticket, wait=0)


def test_requester_killed_after_submit_and_another_process_collects(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    b = mailboxes("b")
    script = Path(__file__).with_name("_submitter.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), server.base_url, client.api_key or "", "req", b.address],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    ticket = Ticket.parse(line)
    with serving(b, echo):
        again = mailboxes("req")  # a new process's view of the same mailbox
        assert [t.correlation_id for t in again.pending()] == [ticket.correlation_id]
        assert again.collect(ticket) == {"echo": {"q": "survive me"}}
    assert again.pending() == []


def test_status_through_every_state(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    ticket = a.submit(b.address, "x", timeout=30)
    assert a.status(ticket).state == "waiting"
    msg = next(b.receive(wait=5, limit=1))
    state = a.status(ticket)
    assert (state.state, state.worker, state.attempts) == ("in_progress", b.worker_id, 1)
    msg.reply("done")
    state = a.status(ticket)
    assert (state.state, state.error) == ("answered", False)
    assert a.status(ticket).state == "answered"  # reading it consumed nothing
    assert a.collect(ticket, wait=0) == "done"
    assert a.status(ticket).state == "collected"

    # failed: a worker that is not a cuemsg mailbox claims it and reports a failure
    failing = a.submit(b.address, "y", timeout=30)
    client.executions.claim(failing.request_execution_id, worker_id="other")
    client.executions.report_outcome(
        failing.request_execution_id, worker_id="other", success=False, error="gave up"
    )
    state = a.status(failing)
    assert state.state == "failed" and "gave up" in state.detail

    # expired: nobody answers before the deadline
    short = a.submit(b.address, "z", timeout=0.5)
    time.sleep(0.7)
    assert a.status(short).state == "expired"
    with pytest.raises(RequestTimeout) as err:
        a.collect(short)
    assert err.value.reason == "no_responder"
    assert a.status(short).state == "expired"
    with pytest.raises(RequestTimeout):  # its record says so now
        a.collect(short, wait=0)


def test_collect_wait_ends_before_the_reply(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    ticket = a.submit(b.address, "later", timeout=30)
    with pytest.raises(ReplyNotReady) as err:
        a.collect(ticket, wait=0.2)
    assert err.value.correlation_id == ticket.correlation_id
    with serving(b, echo):
        assert a.collect(ticket, wait=10) == {"echo": "later"}


def test_pending_and_sweep_settle_what_expired(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    keep = a.submit(b.address, 1, timeout=60)
    lapse = a.submit(b.address, 2, timeout=0.5)
    # b answers both; the reply to `lapse` is never collected
    for msg in b.receive(wait=2, limit=2):
        msg.reply(msg.body)
    assert {t.correlation_id for t in a.pending()} == {keep.correlation_id, lapse.correlation_id}
    time.sleep(0.7)
    assert [t.correlation_id for t in a.pending()] == [keep.correlation_id]  # swept
    assert a.sweep() == 0  # nothing left to settle
    assert a.status(lapse).state == "expired"
    with pytest.raises(RequestTimeout):
        a.collect(lapse, wait=0)
    expired = [
        e
        for e in client.executions.list(cue_id=a.address).executions
        if (e.outcome or {}).get("metadata", {}).get("cuemsg", {}).get("state") == "expired"
    ]
    assert len(expired) == 2  # the ticket record and the reply nobody collected
    assert a.collect(keep) == 1


def test_a_reply_collected_after_its_deadline_is_expired(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    ticket = a.submit(b.address, "q", timeout=0.6)
    next(b.receive(wait=5, limit=1)).reply("a")
    time.sleep(0.8)
    with pytest.raises(RequestTimeout) as err:
        a.collect(ticket)
    assert err.value.reason == "expired"
    assert a.status(ticket).state == "expired"


def test_ticket_errors(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    ticket = a.submit(b.address, "x", timeout=30)
    with pytest.raises(MailboxError, match="belongs to the mailbox"):
        b.collect(ticket)
    with pytest.raises(TypeError, match="expected a Ticket"):
        a.status(str(ticket))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be > 0"):
        a.submit(b.address, "x", timeout=0)
    with pytest.raises(ValueError, match="wait must be >= 0"):
        a.collect(ticket, wait=-1)
    with pytest.raises(ValueError, match="must start with"):
        Ticket.parse("hello")
    with pytest.raises(ValueError, match="base64url"):
        Ticket.parse("cuemsg-ticket:a")
    with pytest.raises(ValueError, match="not a cuemsg ticket"):
        Ticket.parse("cuemsg-ticket:e30")  # {} lacks every field
    with pytest.raises(ValueError, match="is a string"):
        Ticket.parse(42)  # type: ignore[arg-type]


def test_a_rejected_request_is_collected_as_no_reply(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    ticket = a.submit("b", "please", timeout=30)  # a name works as well as an address
    assert ticket.to == b.address
    next(b.receive(wait=5, limit=1)).reject("not my job")
    with pytest.raises(NoReply) as err:
        a.collect(ticket)
    assert (err.value.settled, err.value.reason) == ("rejected", "not my job")
    assert a.status(ticket).state == "collected"  # the notice was collected, once
