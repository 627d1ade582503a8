"""`gather` end to end against the embedded server (extensions on and off), sync.

All answer; `need` of them (the rest withdrawn and never handled); the
deadline with one dead, one absent and one erroring responder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cuemsg import NoReply, RemoteError
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import POLL, serving

Open = Callable[..., Mailbox]


def test_gather_all(client: CueClient, mailboxes: Open) -> None:
    a = mailboxes("a")
    peers = [mailboxes(f"p{i}") for i in range(3)]
    with (
        serving(peers[0], lambda m: "r0"),
        serving(peers[1], lambda m: "r1"),
        serving(peers[2], lambda m: "r2"),
    ):
        result = a.gather([p.address for p in peers], {"q": 1}, timeout=20)
    assert result.replies == {p.address: f"r{i}" for i, p in enumerate(peers)}
    assert list(result.receipts) == [p.address for p in peers]
    assert {r.state for r in result.receipts.values()} == {"replied"}
    for receipt in result.receipts.values():
        exe = client.executions.get(receipt.execution_id)
        assert exe.payload is not None
        assert exe.payload["cuemsg"]["gather"] == result.gather_id  # the record names it
        assert exe.status == "success"


def test_gather_need_withdraws_the_rest_and_they_are_never_handled(
    client: CueClient, mailboxes: Open
) -> None:
    a = mailboxes("a")
    fast, idle1, idle2 = mailboxes("fast"), mailboxes("idle1"), mailboxes("idle2")
    with serving(fast, lambda m: "first"):
        result = a.gather([fast.address, idle1.address, idle2.address], "q", timeout=20, need=1)
    assert result.replies == {fast.address: "first"}
    for idle in (idle1, idle2):
        receipt = result.receipts[idle.address]
        assert receipt.state == "cancelled" and "withdrawn" in receipt.detail
        exe = client.executions.get(receipt.execution_id)
        assert exe.status == "failed"
        assert (exe.outcome or {})["metadata"]["cuemsg"]["state"] == "cancelled"
        assert (exe.outcome or {})["metadata"]["cuemsg"]["gather"] == result.gather_id
    handled: list[Any] = []
    for idle in (idle1, idle2):
        with serving(idle, handled.append, idle_timeout=POLL * 3):
            time.sleep(POLL * 2)
    assert handled == []


def test_gather_deadline_with_dead_absent_and_erroring_responders(
    short_lease_server: RunningServer,
) -> None:
    """Leases of 1 s: the responder that claims and dies is seen dead within the gather."""
    with CueClient(short_lease_server.new_key(), short_lease_server.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=POLL)
        good, bad = Mailbox.open(client, "good", poll_wait=POLL), Mailbox.open(client, "bad")
        dead, absent = Mailbox.open(client, "dead"), Mailbox.open(client, "absent")

        def boom(msg: Message[Any]) -> Any:
            raise KeyError("missing")

        claimed = threading.Event()

        def die() -> None:  # claims the request and never settles it: a crashed responder
            while not claimed.is_set():
                got = client.executions.claim_next(worker_id="doomed", task=dead.task, wait=1)
                if got.claimed:
                    claimed.set()

        killer = threading.Thread(target=die, daemon=True)
        killer.start()
        try:
            with serving(good, lambda m: "ok"), serving(bad, boom):
                to = [good.address, bad.address, dead.address, absent.address]
                result = a.gather(to, "q", timeout=2.5)
        finally:
            claimed.set()
            killer.join(timeout=5)
            for mb in (a, good, bad, dead, absent):
                mb.close()
    states = {addr: r.state for addr, r in result.receipts.items()}
    assert states == {
        good.address: "replied",
        bad.address: "error",
        dead.address: "dead_responder",
        absent.address: "no_responder",
    }
    assert result.replies == {good.address: "ok"}
    error = result.receipts[bad.address].error
    assert isinstance(error, RemoteError) and error.type == "KeyError"


def test_gather_bad_arguments(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with pytest.raises(ValueError, match="at least one recipient"):
        a.gather([], "q")
    with pytest.raises(ValueError, match="listed twice"):
        a.gather([b.address, b.address], "q")
    with pytest.raises(ValueError, match=r"need must be 1\.\.1"):
        a.gather([b.address], "q", need=2)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        a.gather([b.address], "q", timeout=0)
    with pytest.raises(TypeError, match="not one string"):
        a.gather(b.address, "q")


def test_a_cancelled_request_claimed_again_is_skipped(short_lease_server: RunningServer) -> None:
    """A responder holds one request when `need` is met, then dies (leases of 1 s): the
    receiver that claims it again skips it, with an outcome saying why."""
    with CueClient(short_lease_server.new_key(), short_lease_server.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=POLL)
        fast, slow = Mailbox.open(client, "fast", poll_wait=POLL), Mailbox.open(client, "slow")
        try:
            held = threading.Event()

            def hold_then_die() -> None:  # claims its request, never settles it
                while not held.is_set():
                    if client.executions.claim_next(
                        worker_id="doomed", task=slow.task, wait=1
                    ).claimed:
                        held.set()

            def answer_once_held(msg: Message[Any]) -> str:
                held.wait(10)  # the other request is in a responder's hands by now
                return "first"

            dying = threading.Thread(target=hold_then_die, daemon=True)
            dying.start()
            with serving(fast, answer_once_held):
                result = a.gather([fast.address, slow.address], "q", timeout=20, need=1)
            held.set()
            dying.join(timeout=5)
            receipt = result.receipts[slow.address]
            assert receipt.state == "cancelled" and "already had it" in receipt.detail
            handled: list[Any] = []
            with serving(Mailbox.open(client, "slow", poll_wait=POLL), handled.append):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    exe = client.executions.get(receipt.execution_id)
                    if exe.outcome is not None:
                        break
                    time.sleep(0.1)
            assert handled == []
            assert exe.attempts == 2 and exe.status == "failed"
            assert (exe.outcome or {})["metadata"]["cuemsg"]["state"] == "cancelled"
            error = (exe.outcome or {})["error"]
            assert result.gather_id in error and "skipped, not handled" in error
        finally:
            for mb in (a, fast, slow):
                mb.close()


def test_gather_names_and_a_request_rejected_without_reply(mailboxes: Open) -> None:
    a, ok, picky = mailboxes("a"), mailboxes("ok"), mailboxes("picky")

    def refuse(msg: Message[Any]) -> None:
        msg.reject("not today")

    with serving(ok, lambda m: "yes"), serving(picky, refuse):
        result = a.gather(["ok", "picky"], "q", timeout=20)
    assert result.replies == {"ok": "yes"}  # keyed as the caller named them
    receipt = result.receipts["picky"]
    assert receipt.state == "no_reply" and isinstance(receipt.error, NoReply)
    assert receipt.error.reason == "not today"
