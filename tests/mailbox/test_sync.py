"""`Mailbox` end to end against the embedded server over real HTTP (extensions on and off)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuemsg._exceptions import (
    AlreadySettled,
    EnvelopeError,
    LeaseLost,
    MailboxError,
    NoResponder,
    NotFound,
    RemoteError,
    RequestTimeout,
    RetryLater,
)
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import MAILBOX_SCHEDULE, Mailbox, Message, Settled
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import POLL, serving

Open = Callable[..., Mailbox]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def echo(msg: Message[Any]) -> Any:
    return {"echo": msg.body}


# -- opening ----------------------------------------------------------------------------------


def test_open_is_idempotent_and_safe_when_raced(client: CueClient, mailboxes: Open) -> None:
    with ThreadPoolExecutor(4) as pool:
        boxes = list(pool.map(lambda _: mailboxes("inbox"), range(4)))
    assert len({mb.address for mb in boxes}) == 1
    cue = client.cues.get(boxes[0].address)
    assert cue.status == "paused" and cue.transport == "worker"
    assert cue.schedule == MAILBOX_SCHEDULE and cue.payload == {"task": "inbox"}
    assert [c.name for c in client.cues.list().cues] == ["inbox"]
    assert boxes[0].task == "inbox" and boxes[0].reply_task.startswith("inbox.replies.")
    with pytest.raises(MailboxError, match="routes task"):
        mailboxes("inbox", task="other")


# -- send / receive ---------------------------------------------------------------------------


def test_any_json_body_round_trips_in_order(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(json_values, min_size=1, max_size=4))
    def check(bodies: list[Any]) -> None:
        for body in bodies:
            a.send(b.address, body)
        got = [(m.body, m.sender) for m in b.receive(wait=5, limit=len(bodies))]
        assert got == [(body, a.address) for body in bodies]

    check()


def test_send_receive_metadata_and_records(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send(b.address, {"x": 1}, thread="t-1", headers={"trace": "abc"})
    [msg] = list(b.receive(wait=5, limit=1))
    assert (msg.id, msg.body, msg.thread, msg.headers) == (
        sent.id,
        {"x": 1},
        "t-1",
        {"trace": "abc"},
    )
    assert msg.sender == a.address and msg.execution_id == sent.execution_id
    assert msg.kind == "message" and msg.attempt == 1 and msg.deliveries == 1
    exe = client.executions.get(sent.execution_id)
    assert exe.status == "success" and exe.claimed_by_worker == b.worker_id
    assert exe.outcome is not None and exe.outcome["metadata"]["cuemsg"]["state"] == "acked"
    # A reply to a plain message is an ordinary message to the sender, same thread.
    a.send(b.address, "ping", thread="t-2")
    for ping in b.receive(wait=5, limit=1, type=str):
        ping.reply("pong")
    [pong] = list(a.receive(wait=5, limit=1))
    assert pong.body == "pong" and pong.correlation_id == ping.id and pong.sender == b.address
    assert pong.thread == "t-2" and pong.kind == "message"
    assert b.stats.replied == 1


def test_typed_bodies(mailboxes: Open) -> None:
    class Order(msgspec.Struct):
        sku: str
        qty: int

    class Ticket(pydantic.BaseModel):
        title: str

    a, b = mailboxes("a"), mailboxes("b")
    a.send(b.address, Order("x", 2))
    [m] = list(b.receive(wait=5, limit=1, type=Order))
    assert m.body == Order("x", 2)
    with serving(b, lambda m: Ticket(title=m.body.title.upper()), type=Ticket):
        assert a.request(b.address, Ticket(title="hi"), type=Ticket, timeout=10) == Ticket(
            title="HI"
        )


def test_scheduled_send(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    at = time.time() + 1.0
    sent = a.send(b.address, "later", send_at=at)
    assert list(b.receive(wait=0.3)) == []
    [m] = list(b.receive(wait=5, limit=1))
    assert m.id == sent.id and time.time() >= at


def test_reject_is_a_dead_letter_and_retry_later_refires(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    dead = a.send(b.address, "bad")
    for m in b.receive(wait=5, limit=1):
        m.reject("cannot parse")
    exe = client.executions.get(dead.execution_id)
    assert exe.status == "failed" and exe.outcome["error"] == "rejected: cannot parse"
    assert [e.id for e in client.executions.list(status="failed").executions] == [exe.id]

    again = a.send(b.address, "soon")
    seen: list[int] = []

    def flaky(msg: Message[Any]) -> None:
        seen.append(msg.attempt)
        if msg.attempt == 1:
            raise RetryLater(0.2, "not ready")

    b.serve(flaky, idle_timeout=2)
    assert seen == [1, 2]
    first = client.executions.get(again.execution_id)
    assert first.status == "success"
    assert first.outcome["result"].startswith("retry later: re-fired as execution")
    nxt = first.outcome["metadata"]["cuemsg"]["next_execution_id"]
    assert client.executions.get(nxt).status == "success"
    assert b.stats.retried == 1


def test_on_error_retry_is_bounded(client: CueClient, mailboxes: Open) -> None:
    a = mailboxes("a")
    b = mailboxes("b", on_error="retry", max_attempts=3, retry_delay=0.05)
    sent = a.send(b.address, "doomed")
    calls: list[int] = []

    def broken(msg: Message[Any]) -> None:
        calls.append(msg.attempt)
        raise ValueError("always")

    b.serve(broken, idle_timeout=1.5)
    assert calls == [1, 2, 3]
    assert b.stats.retried == 2 and b.stats.rejected == 1
    assert client.executions.get(sent.execution_id).outcome["success"] is True  # retried


def test_unsettled_messages_are_acked_when_the_loop_moves_on(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = [a.send(b.address, i) for i in range(3)]
    assert [m.body for m in b.receive(wait=2)] == [0, 1, 2]
    assert {client.executions.get(s.execution_id).status for s in sent} == {"success"}
    assert b.stats.acked == 3


# -- bad inputs ---------------------------------------------------------------------------------


def test_settling_twice_raises_already_settled(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    a.send(b.address, "once")
    got = []
    for msg in b.receive(wait=5, limit=1):
        msg.reject("not for me")
        with pytest.raises(AlreadySettled, match=r"already settled \(rejected\)") as info:
            msg.ack()
        assert (info.value.message_id, info.value.settled) == (msg.id, Settled.REJECTED)
        got.append(msg)
    assert [m.settled for m in got] == [Settled.REJECTED]  # the loop did not ack it either
    assert b.stats.rejected == 1 and b.stats.acked == 0


def test_a_message_left_open_is_not_acked_and_can_be_answered_later(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    a.send(b.address, "answer me later")
    left = []
    for msg in b.receive(wait=5, limit=1):
        msg.leave()
        with pytest.raises(AlreadySettled, match=r"already settled \(left\)"):
            msg.leave()
        left.append(msg)
    assert [m.settled for m in left] == [Settled.LEFT]
    assert b.stats.acked == 0
    record = client.executions.get(left[0].execution_id)
    assert record.status == "delivering"  # still held, for another process to settle


def test_bad_inputs(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with pytest.raises(NotFound):
        a.send("cue_doesnotexist", "x")
    with pytest.raises(EnvelopeError, match="cannot be encoded"):
        a.send(b.address, {"x": object()})
    with pytest.raises(EnvelopeError, match="too large"):
        a.send(b.address, "x" * (1024 * 1024))
    # Each of these used to be sent: dead on arrival (expired), or a dead letter every
    # receiver rejects as an unreadable envelope. The sender is told instead.
    for ttl in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="ttl must be > 0 seconds"):
            a.send(b.address, "x", ttl=ttl)
    with pytest.raises(ValueError, match="ttl must be > 0 seconds, not -1"):
        a.publish("news.x", "x", ttl=-1)  # refused even with no subscriber to send to
    with pytest.raises(TypeError, match="thread must be a string, not int 123"):
        a.send(b.address, "x", thread=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="headers must map strings to strings: 'n': 1"):
        a.send_many(b.address, ["x"], headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="headers must be a dict of strings, not list"):
        a.send(b.address, "x", headers=["n"])  # type: ignore[arg-type]
    assert client.executions.list().executions == []  # nothing was fired
    # A negative wait or limit used to end the loop at once, as if nothing had come.
    with pytest.raises(ValueError, match="wait must be >= 0, not -1"):
        list(b.receive(wait=-1))
    with pytest.raises(ValueError, match="limit must be >= 0, not -2"):
        list(b.receive(wait=0, limit=-2))
    with pytest.raises(NotFound):
        a.request("cue_doesnotexist", "x", timeout=1)


def test_a_receive_loop_survives_bad_messages(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    newer = client.cues.fire(b.address, {"message": 1, "cuemsg": {"v": 99, "id": "z"}})
    junk = client.cues.fire(b.address, {"message": 1, "cuemsg": "junk"})
    foreign = client.cues.fire(b.address, {"task": "b", "message": {"from": "elsewhere"}})
    good = a.send(b.address, "after")
    got = list(b.receive(wait=1))
    assert [(m.body, m.foreign) for m in got] == [({"from": "elsewhere"}, True), ("after", False)]
    assert got[0].id == f"exec:{foreign.id}" and got[0].sender is None
    for bad in (newer, junk):
        exe = client.executions.get(bad.id)
        assert exe.status == "failed" and exe.outcome["error"].startswith("rejected")
    assert "newer than this cuemsg reads" in client.executions.get(newer.id).outcome["error"]
    assert client.executions.get(good.execution_id).status == "success"
    assert b.stats.bad == 2


def test_redelivered_ids_are_handled_once(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send(b.address, "once")
    payload = client.executions.get(sent.execution_id).payload
    # The same message on a second execution (as after a lost fire answer, fired unkeyed).
    dup = client.cues.fire(b.address, payload, idempotency_key="another-key")
    calls: list[str] = []
    b.serve(lambda m: calls.append(m.id), idle_timeout=1)
    assert calls == [sent.id]
    exe = client.executions.get(dup.id)
    assert exe.status == "success" and exe.outcome["result"].startswith("duplicate")
    assert b.stats.duplicates == 1


# -- request / reply ------------------------------------------------------------------------------


def test_each_reply_is_acked_by_the_next_call(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with serving(b, lambda m: m.body):
        assert [a.request(b.address, n, timeout=10) for n in range(4)] == [0, 1, 2, 3]
        replies = client.executions.list(cue_id=a.address).executions
        assert len(replies) == 4
        if "claim.settle" in client.extensions:  # each ack rode on the next reply claim
            assert sum(r.status == "success" for r in replies) >= 3
    a.close()
    replies = client.executions.list(cue_id=a.address).executions
    assert [r.status for r in replies] == ["success"] * 4  # the last one at close


def test_request_reply_and_accountability(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with serving(b, echo):
        assert a.request(b.address, [1, 2], timeout=10) == {"echo": [1, 2]}
    a.close()  # records the reply's ack, which waits up to REPLY_ACK_DELAY for company
    [exe] = [e for e in client.executions.list(cue_id=b.address).executions]
    meta = exe.outcome["metadata"]["cuemsg"]
    assert exe.status == "success" and meta["state"] == "replied"
    reply = client.executions.get(meta["reply_execution_id"])
    assert reply.cue_id == a.address and reply.payload["task"] == a.reply_task
    assert reply.payload["cuemsg"]["correlation_id"] == meta["correlation_id"]
    assert reply.status == "success" and "delivered" in reply.outcome["result"]


def test_a_reply_and_its_outcome_are_one_request_with_outcome_reply(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    one = "outcome.reply" in client.extensions  # probed before counting
    a.send(b.address, "ping")
    used, reply_eid = 0, ""
    for ping in b.receive(wait=5, limit=1):
        before = server.requests
        reply_eid = ping.reply("pong")
        used = server.requests - before - 1  # the second /health read counts itself
    assert used == (1 if one else 2)
    exe = client.executions.get(ping.execution_id)
    assert exe.outcome is not None and reply_eid in exe.outcome["result"]
    assert exe.outcome["metadata"]["cuemsg"]["reply_execution_id"] == reply_eid
    [pong] = list(a.receive(wait=5, limit=1))
    assert pong.execution_id == reply_eid and pong.correlation_id == ping.id


def test_one_at_a_time_rpc_takes_four_requests_a_call_with_the_extensions(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    calls = 20
    with serving(b, echo):
        assert a.request(b.address, -1, timeout=10) == {"echo": -1}  # loops started
        before = server.requests
        for i in range(calls):
            assert a.request(b.address, i, timeout=10) == {"echo": i}
        used = server.requests - before - 1  # the second /health read counts itself
    if "outcome.reply" in client.extensions:
        # fire, claim + reply-and-outcome by the responder, the reply's claim; the
        # reply acks go in batches (a couple of long polls may end empty meanwhile).
        assert used <= 4 * calls + 4, used
    a.close()  # records the reply acks still waiting
    replies = client.executions.list(cue_id=a.address, limit=100).executions
    assert len(replies) == calls + 1 and {e.status for e in replies} == {"success"}
    assert a.stats.replies_received == calls + 1


def test_fifty_outstanding_requests_three_responders(mailboxes: Open) -> None:
    a = mailboxes("client")
    workers = [mailboxes("svc", worker_id=f"w{i}") for i in range(3)]
    by: dict[str, int] = {}

    def handler(msg: Message[Any]) -> Any:
        time.sleep(0.01)
        return {"n": msg.body, "by": msg.task}

    with (
        serving(workers[0], handler, concurrency=4),
        serving(workers[1], handler, concurrency=4),
        serving(workers[2], handler, concurrency=4),
        ThreadPoolExecutor(50) as pool,
    ):
        answers = list(pool.map(lambda n: a.request(workers[0].address, n, timeout=30), range(50)))
    assert [r["n"] for r in answers] == list(range(50))
    for w in workers:
        by[w.worker_id] = w.stats.replied
    assert sum(by.values()) == 50
    assert a.pending_requests == 0 and a.stats.replies_received == 50


def test_two_processes_on_one_mailbox_never_take_each_others_replies(mailboxes: Open) -> None:
    # Two opens of one name stand for two processes: each has its own reply stream.
    first, second = mailboxes("caller"), mailboxes("caller")
    assert first.address == second.address and first.reply_task != second.reply_task
    svc = mailboxes("svc")
    with serving(svc, lambda msg: msg.body * 2, concurrency=4), ThreadPoolExecutor(20) as pool:
        asks = [(mb, n) for n in range(10) for mb in (first, second)]
        answers = list(pool.map(lambda a: a[0].request(svc.address, a[1], timeout=30), asks))
    assert answers == [n * 2 for n, _ in ((n, mb) for n in range(10) for mb in (1, 2))]
    assert first.stats.replies_received == second.stats.replies_received == 10
    assert first.stats.late_replies == second.stats.late_replies == 0


def test_remote_error(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")

    def broken(msg: Message[Any]) -> Any:
        raise ZeroDivisionError("division by zero")

    with serving(b, broken), pytest.raises(RemoteError) as info:
        a.request(b.address, 1, timeout=10)
    assert info.value.type == "ZeroDivisionError" and info.value.message == "division by zero"


def test_timeout_no_responder_and_expired_request(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with pytest.raises(RequestTimeout) as info:
        a.request(b.address, "anyone?", timeout=0.5)
    assert info.value.reason == "no_responder" and "no receiver claimed it" in str(info.value)
    calls: list[Any] = []
    b.serve(calls.append, idle_timeout=0.5)  # comes up after the requester gave up
    assert calls == []
    exe = client.executions.get(info.value.execution_id)  # type: ignore[arg-type]
    assert exe.status == "failed" and exe.outcome["error"].startswith("expired")
    assert b.stats.expired == 1


def test_slow_responder_and_late_reply(client: CueClient, mailboxes: Open) -> None:
    late: list[Message[Any]] = []
    a = mailboxes("a", on_late_reply=late.append)
    b = mailboxes("b")
    done = threading.Event()

    def slow(msg: Message[Any]) -> Any:
        time.sleep(1.8)
        done.set()
        return "too late"

    with serving(b, slow):
        with pytest.raises(RequestTimeout) as info:
            a.request(b.address, "hurry", timeout=0.9)
        assert info.value.reason == "slow_responder"
        assert done.wait(5)
        time.sleep(0.2)
    # The next request's reply stream (or close) picks the late reply up and settles it.
    # (stop() is final: a second responder on the same mailbox cue answers this one.)
    with serving(mailboxes("b", worker_id="b-2"), echo):
        assert a.request(b.address, "next", timeout=10) == {"echo": "next"}
    deadline = time.time() + 5
    while not late and time.time() < deadline:
        time.sleep(0.05)
    [msg] = late
    assert msg.body == "too late" and msg.correlation_id == info.value.correlation_id
    a.close()  # records the reply acks still waiting (REPLY_ACK_DELAY)
    request_exe = client.executions.get(info.value.execution_id)  # type: ignore[arg-type]
    reply_eid = request_exe.outcome["metadata"]["cuemsg"]["reply_execution_id"]
    reply_exe = client.executions.get(reply_eid)
    assert reply_exe.outcome["result"].startswith("late reply")
    assert a.stats.late_replies == 1


def test_require_responder(mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    with pytest.raises(NoResponder):
        a.request(b.address, "x", timeout=5, require_responder=True)
    with serving(b, echo):
        deadline = time.time() + 5
        while True:  # the first presence heartbeat goes out as serve starts
            try:
                assert a.request(b.address, "x", timeout=5, require_responder=True)
                break
            except NoResponder:
                assert time.time() < deadline
                time.sleep(0.1)


# -- leases ---------------------------------------------------------------------------------------


def test_heartbeats_keep_a_long_handler_lease(short_lease_server: RunningServer) -> None:
    srv = short_lease_server
    with CueClient(srv.new_key(), srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=POLL)
        b = Mailbox.open(client, "b", poll_wait=POLL)
        sent = a.send(b.address, "slow")
        b.serve(lambda m: time.sleep(2.5), idle_timeout=0.5)
        exe = client.executions.get(sent.execution_id)
        assert exe.status == "success" and exe.attempts == 1
        assert b.stats.acked == 1 and b.stats.redelivered == 0
        a.close()
        b.close()


def test_a_lost_lease_is_reported_not_acked(short_lease_server: RunningServer) -> None:
    srv = short_lease_server
    with CueClient(srv.new_key(), srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=POLL)
        b1 = Mailbox.open(client, "b", worker_id="b1", poll_wait=POLL)
        b2 = Mailbox.open(client, "b", worker_id="b2", poll_wait=POLL)
        sent = a.send(b1.address, "contested")
        gen = b1.receive(wait=5)
        msg = next(gen)
        b1._core.leases.release(msg.execution_id)  # b1 hangs: no more heartbeats
        [again] = list(b2.receive(wait=5, limit=1))  # its lease ran out; b2 gets it
        assert again.id == msg.id and again.deliveries == 2
        with pytest.raises(LeaseLost):
            msg.ack()
        assert b1.stats.redelivered == 1
        exe = client.executions.get(sent.execution_id)
        assert exe.status == "success" and exe.outcome["worker_id"] == "b2"
        gen.close()
        for mb in (a, b1, b2):
            mb.close()


def test_timeout_names_a_dead_responder(short_lease_server: RunningServer) -> None:
    srv = short_lease_server
    with CueClient(srv.new_key(), srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=POLL)
        b = Mailbox.open(client, "b", poll_wait=POLL)
        caught: list[RequestTimeout] = []

        def ask() -> None:
            with pytest.raises(RequestTimeout) as info:
                a.request(b.address, "are you there?", timeout=2.0)
            caught.append(info.value)

        asking = threading.Thread(target=ask)
        asking.start()
        gen = b.receive(wait=5)
        msg = next(gen)  # claimed it ...
        b._core.leases.release(msg.execution_id)  # ... then hung: no heartbeat, no outcome
        asking.join(timeout=10)
        [err] = caught
        assert err.reason == "dead_responder", str(err)
        assert "lost the lease" in str(err)
        gen.close()
        for mb in (a, b):
            mb.close()


# -- batches --------------------------------------------------------------------------------------


def test_one_at_a_time_a_message_costs_two_requests_with_claim_settle(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    carry = "claim.settle" in client.extensions  # probed before counting
    messages = b.receive(wait=5)
    sent = []
    before = server.requests
    for i in range(20):
        sent.append(a.send(b.address, i))
        assert next(messages).body == i  # the ack of i - 1 rides on this claim
    used = server.requests - before - 1  # the second /health read counts itself
    if carry:
        assert used == 2 * 20  # a fire and a claim each; no ack request
    else:
        assert used >= 3 * 20 - 1  # and an ack each
    messages.close()  # left holding the last one: it is not acked (redelivered later)
    statuses = [client.executions.get(s.execution_id).status for s in sent]
    assert statuses == ["success"] * 19 + ["delivering"]
    assert b.stats.acked == 19 and not b._core.acks


def test_receive_in_batches_gets_all_in_order_with_fewer_requests(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    used: dict[int, int] = {}
    for batch in (1, 10):
        sent = a.send_many(b.address, [f"{batch}-{i}" for i in range(100)])
        before = server.requests
        got = [m.body for m in b.receive(wait=2, limit=100, batch=batch)]
        used[batch] = server.requests - before
        assert got == [f"{batch}-{i}" for i in range(100)]
        assert {client.executions.get(s.execution_id).status for s in sent} == {"success"}
    assert used[10] < used[1]
    assert b.stats.acked == 200 and b.stats.redelivered == 0
    assert len(b._core.leases) == 0 and not b._core.acks


def test_leaving_a_prefetching_loop_records_the_acks_and_gives_back_the_rest(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    given_back = "executions.release" in client.extensions
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send_many(b.address, list(range(10)))
    for msg in b.receive(wait=2, prefetch=5):
        if msg.body == 2:
            break  # 0 and 1 were acked (queued); 2 is left unsettled, 3 and 4 unyielded
    records = [client.executions.get(s.execution_id) for s in sent]
    assert [r.status for r in records[:2]] == ["success"] * 2
    assert records[2].status == "delivering"  # in hand: its lease runs out
    # Claimed ahead, never handed out: pending again at once, the claim not counted
    # (on the plain contract their leases run out instead).
    if given_back:
        assert [(r.status, r.attempts) for r in records[3:5]] == [("pending", 0)] * 2
    else:
        assert [r.status for r in records[3:5]] == ["delivering"] * 2
    assert b.stats.acked == 2 and not b._core.acks and not b._core.prefetched
    assert len(b._core.leases) == 0
    # stop() ends the loop before the next message; the rest claimed are given back.
    c = mailboxes("b", worker_id="b-2")
    got: list[Any] = []
    for msg in c.receive(wait=2, prefetch=4):
        got.append(msg.body)
        c.stop()
    first = 3 if given_back else 5
    assert got == [first]
    rest = [client.executions.get(s.execution_id) for s in sent[first + 1 : first + 4]]
    if given_back:
        assert [(r.status, r.attempts) for r in rest] == [("pending", 0)] * 3
    assert client.executions.get(sent[first].execution_id).status == "success"
    assert c.stats.acked == 1 and not c._core.prefetched and len(c._core.leases) == 0


def test_serve_batches_outcomes_under_load(
    server: RunningServer, client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    n = 200
    sent = a.send_many(b.address, list(range(n)))
    handled: list[int] = []

    def handler(msg: Message[Any]) -> None:
        time.sleep(0.002)
        handled.append(msg.body)

    before = server.requests
    b.serve(handler, concurrency=8, idle_timeout=0.5)
    used = server.requests - before
    assert sorted(handled) == list(range(n))
    assert used < n * 3
    if "outcome.batch" in client.extensions:
        assert used < n  # fewer requests than acks: they went in batches
    assert b.stats.acked == n and not b._core.acks and len(b._core.leases) == 0
    assert {client.executions.get(s.execution_id).status for s in sent} == {"success"}


def test_a_lost_lease_inside_a_batch_of_acks_is_redelivered_not_acked(
    three_second_lease_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cuemsg.mailbox import _serve

    monkeypatch.setattr(_serve, "SERVE_ACK_DELAY", 10.0)  # only "no handler runs" flushes
    srv = three_second_lease_server
    key = srv.new_key()
    with CueClient(key, srv.base_url) as client, CueClient(key, srv.base_url) as b1_client:
        reports: list[list[str]] = []
        report_outcomes = b1_client.executions.report_outcomes

        def spy(outcomes: Any, *, worker_id: str) -> Any:
            reports.append([o.execution_id for o in outcomes])
            return report_outcomes(outcomes, worker_id=worker_id)

        claim_next = b1_client.executions.claim_next

        def claim_spy(**kwargs: Any) -> Any:  # with claim.settle the acks ride on a claim
            if kwargs.get("settle"):
                reports.append([o.execution_id for o in kwargs["settle"]])
            return claim_next(**kwargs)

        b1_client.executions.report_outcomes = spy  # type: ignore[method-assign]
        claim_next = b1_client.executions.claim_next

        def carried(**kwargs: Any) -> Any:  # acks ride on serve()'s next claim too
            if kwargs.get("settle"):
                reports.append([o.execution_id for o in kwargs["settle"]])
            return claim_next(**kwargs)

        b1_client.executions.claim_next = carried  # type: ignore[method-assign]
        b1_client.executions.claim_next = claim_spy  # type: ignore[method-assign]
        a = Mailbox.open(client, "a", poll_wait=POLL)
        b1 = Mailbox.open(b1_client, "b", worker_id="b1", poll_wait=POLL)
        b2 = Mailbox.open(client, "b", worker_id="b2", poll_wait=POLL)
        sent = a.send_many(b1.address, ["slow", "x1", "x2", "x3"])
        inside = threading.Barrier(5)
        go = threading.Event()

        def handler(msg: Message[Any]) -> None:
            if msg.body == "slow":
                b1._core.leases.release(msg.execution_id)  # b1 hangs on it: no renewals
            inside.wait(timeout=10)
            assert go.wait(timeout=10)

        with serving(b1, handler, concurrency=4):
            inside.wait(timeout=10)  # all four claimed in one go, handlers running
            taken = b2.receive(wait=5)
            again = next(taken)  # the lease ran out; b2 holds it now
            assert again.body == "slow" and again.deliveries == 2
            go.set()
            deadline = time.time() + 10
            while b1.stats.acked + b1.stats.redelivered < 4 and time.time() < deadline:
                time.sleep(0.02)
            again.ack()
            taken.close()
        eids = [s.execution_id for s in sent]
        # The four outcomes were each sent once (batched: how they group depends on
        # when the handlers end against serve()'s next claim); the slow one's was
        # refused, its lease gone.
        reported = [eid for report in reports for eid in report]
        assert sorted(reported) == sorted(eids)
        assert len(reports) < 4
        assert b1.stats.acked == 3 and b1.stats.redelivered == 1
        slow = client.executions.get(eids[0])
        assert slow.status == "success" and slow.outcome["worker_id"] == "b2"
        for eid in eids[1:]:
            exe = client.executions.get(eid)
            assert exe.status == "success" and exe.outcome["worker_id"] == "b1"
        for mb in (a, b1, b2):
            mb.close()
