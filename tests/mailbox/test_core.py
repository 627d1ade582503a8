"""The mailbox core with no I/O: each flow is stepped by hand, op by op."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from cuemsg._exceptions import (
    AlreadySettled,
    Conflict,
    CueAPIError,
    ExtensionNotAvailable,
    Forbidden,
    LeaseLost,
    MailboxError,
    NoResponder,
    NotFound,
    RemoteError,
    RequestTimeout,
    RetryLater,
    TransportError,
)
from cuemsg.cueapi.models import (
    REPLY_TOKEN,
    Claimed,
    ClaimResult,
    Cue,
    CueList,
    Execution,
    FireResult,
    OutcomeResult,
    Released,
    Worker,
    decode_model,
)
from cuemsg.envelope import Meta, build_payload, decode_payload, from_timestamp, payload_bytes
from cuemsg.mailbox._config import (
    ACK_TRIES,
    MAILBOX_SCHEDULE,
    PRESENCE_KEY,
    SERVE_ACK_DELAY,
    MailboxConfig,
    MailboxInfo,
)
from cuemsg.mailbox._core import MailboxCore
from cuemsg.mailbox._leases import LeaseBook
from cuemsg.mailbox._opening import open_mailbox
from cuemsg.mailbox._ops import (
    AnnounceWorker,
    AwaitReply,
    CallHandler,
    Claim,
    CreateCue,
    Deliver,
    Extensions,
    Fire,
    GetCue,
    GetExecution,
    IdleWait,
    ListCues,
    ListWorkers,
    Pause,
    RecordOutcome,
    RecordOutcomes,
    RecordReply,
    Release,
    RenewLease,
    StartReplies,
    UpdateCue,
    WaitSlots,
    advance,
)
from cuemsg.mailbox._records import Delivery, Settled
from cuemsg.mailbox._replies import ReplyRouter, explain_timeout
from cuemsg.mailbox.dedupe import MemoryDedupe, SQLiteDedupe

ME = "cue_me0000000000"
PEER = "cue_peer00000000"


def run(flow: Any, answer: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """Drive `flow`: `answer(op)` returns the op's result or raises its error."""
    ops: list[Any] = []
    value: Any = None
    exc: BaseException | None = None
    while True:
        done, op = advance(flow, value, exc)
        if done:
            return op, ops
        value, exc = None, None
        if isinstance(op, Extensions) and answer(op) is None:
            # An answer that knows no extensions: the plain path, whose ops these tests count.
            value = frozenset()
            continue
        ops.append(op)
        try:
            value = answer(op)
        except Exception as err:
            exc = err


def _with_reply(op: Any) -> Any:
    """A healthy server that lists `outcome.reply`."""
    if isinstance(op, Extensions):
        return frozenset({"outcome.reply"})
    if isinstance(op, RecordReply):
        reply = FireResult(id=f"x-{op.reply.idempotency_key}")
        return OutcomeResult(execution_id=op.execution_id, reply=reply)
    return ok(op)


def wire_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the server stores it (encoded and decoded once)."""
    decoded: dict[str, Any] = msgspec.json.decode(payload_bytes(payload))
    return decoded


def claimed(payload: Any, eid: str = "e1", attempts: int = 1) -> Claimed:
    return Claimed(
        execution_id=eid, lease_seconds=30, cue_id=ME, task="me", payload=payload, attempts=attempts
    )


def make_core(**config: Any) -> MailboxCore:
    info = MailboxInfo(
        name="me",
        address=ME,
        task="me",
        reply_task="me.replies",
        worker_id="w1",
        cue_payload={"task": "me"},
    )
    return MailboxCore(info, MailboxConfig(**config), event_factory=threading.Event)


def message(meta: Meta, body: Any = None, task: str = "me", reply_to: str | None = PEER) -> Any:
    return wire_payload(build_payload(meta=meta, body=body, task=task, reply_cue_id=reply_to))


def ok(op: Any) -> Any:
    """Answers every op as a healthy server would."""
    if isinstance(op, Fire):
        return FireResult(id=f"x-{op.idempotency_key}", scheduled_for="2030-01-01T00:00:00+00:00")
    if isinstance(op, RecordOutcome):
        return OutcomeResult(execution_id=op.execution_id)
    if isinstance(op, RecordOutcomes):
        return [OutcomeResult(execution_id=o.execution_id) for o in op.outcomes]
    if isinstance(op, CallHandler):
        return op.handler(op.message)
    return None


# -- opening ----------------------------------------------------------------------------------


def test_open_creates_a_paused_recurring_worker_cue() -> None:
    def answer(op: Any) -> Any:
        if isinstance(op, CreateCue):
            assert op.schedule == MAILBOX_SCHEDULE and op.schedule["type"] == "recurring"
            return Cue(id=ME, name=op.name, payload=op.payload, status="active")
        assert isinstance(op, UpdateCue) and op.changes == {"status": "paused"}
        return Cue(id=ME, name="me", payload={"task": "me"}, status="paused")

    info, ops = run(open_mailbox("me", task=None, worker_id="w"), answer)
    assert [type(o) for o in ops] == [CreateCue, UpdateCue]
    assert (info.address, info.task, info.worker_id) == (ME, "me", "w")
    # Each open mailbox has a reply stream of its own.
    again, _ = run(open_mailbox("me", task=None, worker_id="w"), answer)
    assert info.reply_task.startswith("me.replies.") and again.reply_task != info.reply_task


def test_open_finds_the_cue_when_the_name_is_taken() -> None:
    pages = [
        CueList(cues=[Cue(id="cue_other", name="other")], total=2),
        CueList(cues=[Cue(id=ME, name="me", payload={"task": "t"}, status="paused")], total=2),
    ]

    def answer(op: Any) -> Any:
        if isinstance(op, CreateCue):
            raise Conflict("taken", status=409, code="cue_name_taken")
        assert isinstance(op, ListCues)
        return pages.pop(0)

    info, ops = run(open_mailbox("me", task=None, worker_id=None), answer)
    assert info.address == ME and info.task == "t"
    assert info.worker_id.startswith("t@")
    assert [type(o) for o in ops] == [CreateCue, ListCues, ListCues]


@pytest.mark.parametrize(
    ("cue", "match"),
    [
        (Cue(id=ME, name="me", transport="webhook", payload={"task": "me"}), "not a mailbox"),
        (Cue(id=ME, name="me", payload={}), "no payload task"),
        (Cue(id=ME, name="me", payload={"task": "other"}), "routes task 'other'"),
    ],
)
def test_open_refuses_cues_that_are_not_this_mailbox(cue: Cue, match: str) -> None:
    def answer(op: Any) -> Any:
        if isinstance(op, CreateCue):
            raise Conflict("taken", status=409, code="cue_name_taken")
        return CueList(cues=[cue], total=1)

    with pytest.raises(MailboxError, match=match):
        run(open_mailbox("me", task="me", worker_id=None), answer)
    for bad in ("x.replies", "x.replies.y"):
        with pytest.raises(ValueError, match="must not contain"):
            run(open_mailbox("me", task=bad, worker_id=None), answer)


# -- sending ----------------------------------------------------------------------------------


def test_send_keys_the_fire_by_the_message_id() -> None:
    c = make_core()
    sent, ops = run(c.send(PEER, {"a": 1}, ttl=5, thread="t1", headers={"h": "v"}), ok)
    [fire] = ops
    assert isinstance(fire, Fire) and fire.cue_id == PEER
    meta = fire.payload["cuemsg"]
    assert fire.idempotency_key == meta["id"] == sent.id
    assert sent.execution_id == f"x-{sent.id}"
    assert meta["sender"] == ME and meta["thread"] == "t1" and meta["headers"] == {"h": "v"}
    assert "expires_at" in meta and "task" not in fire.payload
    assert c.stats.sent == 1


# -- receiving ----------------------------------------------------------------------------------


def test_admit_rejects_unreadable_envelopes_with_the_reason() -> None:
    c = make_core()
    newer = {"task": "me", "message": 1, "cuemsg": {"v": 99, "id": "x"}}
    got, ops = run(c.admit(claimed(newer)), ok)
    assert got is None
    [outcome] = ops
    assert isinstance(outcome, RecordOutcome) and not outcome.success
    assert outcome.error is not None and "newer" in outcome.error
    assert outcome.metadata == {"cuemsg": {"state": "rejected", "reason": "bad_envelope"}}
    assert c.stats.bad == 1 and "e1" not in c.leases


def test_admit_skips_expired_messages_and_records_why() -> None:
    c = make_core()
    meta = Meta(id="m1", expires_at=from_timestamp(time.time() - 5))
    got, ops = run(c.admit(claimed(message(meta, "late"))), ok)
    assert got is None
    assert isinstance(ops[0], RecordOutcome) and not ops[0].success
    assert (ops[0].error or "").startswith("expired")
    assert c.stats.expired == 1


def test_admit_hands_over_foreign_payloads() -> None:
    c = make_core()
    got, ops = run(c.admit(claimed({"task": "me", "message": {"hi": 1}})), ok)
    assert ops == []
    assert isinstance(got, Delivery) and got.foreign and got.body == {"hi": 1}
    assert got.id == "exec:e1" and got.kind == "message" and got.meta is None


def test_duplicates_are_acked_without_the_handler_and_replies_resent() -> None:
    c = make_core()
    request = Meta(id="r1", kind="request", correlation_id="r1", reply_task="peer.replies")
    calls: list[Any] = []

    def handler(msg: Any) -> Any:
        calls.append(msg.body)
        return {"answer": 42}

    _, first = run(c.handle(claimed(message(request, "q")), handler), ok)
    assert calls == ["q"]
    assert [type(o) for o in first] == [CallHandler, Fire, RecordOutcome]
    reply_fire = first[1]
    # The same request again (a redelivery): no handler call, the reply is fired again.
    _, again = run(c.handle(claimed(message(request, "q"), eid="e2"), handler), ok)
    assert calls == ["q"]
    assert [type(o) for o in again] == [Fire, RecordOutcome]
    assert again[0].idempotency_key == reply_fire.idempotency_key
    assert again[0].payload == wire_payload(reply_fire.payload)
    assert again[1].success and "duplicate" in (again[1].result or "")
    assert c.stats.duplicates == 1


def test_ack_records_dedupe_then_the_outcome() -> None:
    c = make_core()
    msg, _ = run(c.admit(claimed(message(Meta(id="m1"), "b"))), ok)
    _, ops = run(c.ack(msg), ok)
    [outcome] = ops
    assert outcome.success and outcome.worker_id == "w1"
    assert outcome.metadata == {"cuemsg": {"state": "acked", "id": "m1", "kind": "message"}}
    assert c.dedupe.seen(f"{ME}/m1") is not None
    # A str enum: it compares equal to its value, as code written before the enum expects.
    assert msg.settled is Settled.ACKED and msg.settled == "acked"  # type: ignore[comparison-overlap]
    with pytest.raises(AlreadySettled, match=r"message m1 is already settled \(acked\)") as info:
        run(c.ack(msg), ok)
    assert (info.value.message_id, info.value.settled) == ("m1", "acked")
    assert isinstance(info.value, MailboxError)
    for settle in (c.reject(msg, "no"), c.retry_later(msg, 1.0), c.reply(msg, "late")):
        with pytest.raises(AlreadySettled):
            run(settle, ok)
    assert msg.settled is Settled.ACKED  # a refused second settle changes nothing


def test_a_lost_lease_is_never_acked_as_if_nothing_happened() -> None:
    c = make_core()
    msg, _ = run(c.admit(claimed(message(Meta(id="m1"), "b"))), ok)
    # A heartbeat answered 403: the lease is gone; ack raises and sends nothing.
    c.leases.hold("e1", 0.3, 0.0)
    _, ops = run(
        c.tick(),
        lambda op: (_ for _ in ()).throw(Forbidden("x", status=403, code="not_execution_owner")),
    )
    assert isinstance(ops[0], RenewLease)
    with pytest.raises(LeaseLost):
        run(c.ack(msg), ok)
    assert c.stats.redelivered == 1
    # A 403 on the outcome itself is a lost lease too.
    msg2, _ = run(c.admit(claimed(message(Meta(id="m2"), "b"), eid="e2")), ok)

    def refuse(op: Any) -> Any:
        raise Forbidden("x", status=403, code="not_execution_owner")

    with pytest.raises(LeaseLost):
        run(c.ack(msg2), refuse)
    assert c.stats.redelivered == 2


def test_retry_later_refires_the_same_message_and_says_so() -> None:
    c = make_core(max_attempts=2)
    msg, _ = run(c.admit(claimed(message(Meta(id="m1"), "b"))), ok)
    new_eid, ops = run(c.retry_later(msg, 10, "busy"), ok)
    fire, outcome = ops
    assert isinstance(fire, Fire) and fire.cue_id == ME
    assert fire.idempotency_key == "m1.retry2"
    assert fire.payload["cuemsg"]["attempt"] == 2 and fire.payload["cuemsg"]["id"] == "m1"
    assert fire.send_at is not None and fire.send_at.timestamp() > time.time() + 5
    assert outcome.success and new_eid == fire_result_id(fire)
    assert outcome.metadata["cuemsg"]["next_execution_id"] == new_eid
    assert "retry later" in outcome.result
    # At max_attempts the message is rejected instead.
    msg2, _ = run(c.admit(claimed(fire.payload, eid="e2")), ok)
    assert msg2.attempt == 2
    assert run(c.retry_later(msg2, 1), ok)[0] is None
    assert c.stats.rejected == 1


def fire_result_id(fire: Fire) -> str:
    return f"x-{fire.idempotency_key}"


def test_reply_goes_to_the_requesters_reply_task_and_the_outcome_names_it() -> None:
    c = make_core()
    request = Meta(id="r1", kind="request", correlation_id="r1", reply_task="peer.replies")
    msg, _ = run(c.admit(claimed(message(request, "q"))), ok)
    reply_eid, (fire, outcome) = run(c.reply(msg, {"a": 1}), ok)
    assert fire.cue_id == PEER and fire.payload["task"] == "peer.replies"
    meta = fire.payload["cuemsg"]
    assert meta["kind"] == "reply" and meta["correlation_id"] == "r1"
    assert fire.idempotency_key == meta["id"]
    assert outcome.success
    assert outcome.metadata["cuemsg"]["reply_execution_id"] == reply_eid
    assert outcome.metadata["cuemsg"]["correlation_id"] == "r1"
    assert reply_eid in outcome.result


def test_with_outcome_reply_a_reply_is_one_op_naming_itself_by_token() -> None:
    c = make_core()
    request = Meta(id="r1", kind="request", correlation_id="r1", reply_task="peer.replies")
    msg, _ = run(c.admit(claimed(message(request, "q"))), ok)
    reply_eid, ops = run(c.reply(msg, {"a": 1}), _with_reply)
    assert [type(o) for o in ops] == [Extensions, RecordReply]
    op = ops[1]
    meta = op.reply.payload_override["cuemsg"]
    assert op.reply.cue_id == PEER and op.reply.idempotency_key == meta["id"]
    assert op.success and op.execution_id == "e1"
    assert op.metadata["cuemsg"]["reply_execution_id"] == REPLY_TOKEN
    assert REPLY_TOKEN in (op.result or "")
    assert reply_eid == f"x-{meta['id']}" and c.stats.replied == 1

    def refused(op: Any) -> Any:
        if isinstance(op, RecordReply):
            raise Forbidden("leased to another worker", status=403, code="not_execution_owner")
        return _with_reply(op)

    request = Meta(id="r2", kind="request", correlation_id="r2", reply_task="peer.replies")
    msg, _ = run(c.admit(claimed(message(request, "q"), eid="e2")), ok)
    with pytest.raises(LeaseLost):
        run(c.reply(msg, {"a": 1}), refused)

    def cue_gone(op: Any) -> Any:
        if isinstance(op, RecordReply):
            raise NotFound("no such cue", status=404, code="cue_not_found", field="reply.cue_id")
        return _with_reply(op)

    request = Meta(id="r3", kind="request", correlation_id="r3", reply_task="peer.replies")
    msg, _ = run(c.admit(claimed(message(request, "q"), eid="e3")), ok)
    with pytest.raises(NotFound):
        run(c.reply(msg, {"a": 1}), cue_gone)
    assert msg.settled is None  # still held: the handler may answer again


def test_handler_errors_become_error_replies_rejections_or_retries() -> None:
    def boom(msg: Any) -> Any:
        raise KeyError("nope")

    c = make_core()
    request = Meta(id="r1", kind="request", correlation_id="r1", reply_task="peer.replies")
    _, ops = run(c.handle(claimed(message(request, "q")), boom), ok)
    fire, outcome = ops[1:]
    assert fire.payload["cuemsg"]["kind"] == "error"
    assert wire_payload(fire.payload)["message"] == {"type": "KeyError", "message": "'nope'"}
    assert not outcome.success and "KeyError" in outcome.error

    _, ops = run(c.handle(claimed(message(Meta(id="m1"), 1), eid="e2"), boom), ok)
    assert isinstance(ops[-1], RecordOutcome) and not ops[-1].success
    assert (ops[-1].error or "").startswith("rejected: handler raised KeyError")

    c = make_core(on_error="retry")
    _, ops = run(c.handle(claimed(message(Meta(id="m2"), 1), eid="e3"), boom), ok)
    assert isinstance(ops[1], Fire) and ops[1].idempotency_key == "m2.retry2"

    def later(msg: Any) -> Any:
        raise RetryLater(3, "not yet")

    _, ops = run(c.handle(claimed(message(Meta(id="m3"), 1), eid="e4"), later), ok)
    assert isinstance(ops[1], Fire) and "not yet" in ops[2].result


def test_body_not_fitting_the_type_answers_a_request_with_an_error() -> None:
    class Point(msgspec.Struct):
        x: int

    c = make_core()
    request = Meta(id="r1", kind="request", correlation_id="r1", reply_task="peer.replies")
    got, ops = run(c.admit(claimed(message(request, {"x": "no"})), Point), ok)
    assert got is None
    assert wire_payload(ops[0].payload)["message"]["type"] == "EnvelopeError"
    got, ops = run(c.admit(claimed(message(Meta(id="m"), {"x": "no"}), eid="e2"), Point), ok)
    assert got is None and not ops[0].success


def test_claim_survives_transient_errors() -> None:
    c = make_core()

    def flaky(op: Any) -> Any:
        if isinstance(op, Claim):
            raise TransportError("down")
        return None

    got, ops = run(c.claim("me", 1, None), flaky)
    assert got == [] and isinstance(ops[1], Pause)
    result = ClaimResult(claimed=True, executions=[claimed({"task": "me"})])
    got, _ = run(c.claim("me", 1, None), lambda op: result)
    assert [g.execution_id for g in got] == ["e1"] and "e1" in c.leases


# -- batches ------------------------------------------------------------------------------------


def batch_of(*ids: str) -> ClaimResult:
    return ClaimResult(
        claimed=True,
        executions=[claimed(message(Meta(id=f"m-{i}"), i), eid=f"e-{i}") for i in ids],
    )


def test_with_claim_settle_each_ack_rides_on_the_next_claim() -> None:
    c = make_core()
    claims: list[Any] = [
        batch_of("1"),
        TransportError("connection reset"),  # this claim's ack waits for the next try
        batch_of("2"),
        ClaimResult(claimed=False),
    ]
    carried: list[list[str]] = []

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset({"claim.settle"})
        if isinstance(op, Claim):
            ids = [o.execution_id for o in op.settle]
            carried.append(ids)
            # Each carried ack's id is in the dedupe store and its lease still held.
            assert all(e in c.leases for e in ids)
            got = claims.pop(0)
            if isinstance(got, Exception):
                raise got
            settled = [OutcomeResult(execution_id=e) for e in ids]
            return msgspec.structs.replace(got, settled=settled)
        return ok(op)

    flow = c.receive(wait=None, limit=None, type=None)
    delivered: list[Any] = []
    value: Any = None
    ops: list[Any] = []
    while claims:
        done, op = advance(flow, value, None)
        assert not done
        ops.append(op)
        if isinstance(op, Deliver):
            delivered.append(op.message.body)
            value = None
            continue
        try:
            value = answer(op)
        except TransportError as exc:
            done, op = advance(flow, None, exc)
            assert isinstance(op, Pause)
            value = None
        if not claims:
            c.stopping = True
    done, _ = advance(flow, value, None)  # the last claim's answer, then the loop ends
    assert done and delivered == ["1", "2"]
    assert carried == [[], ["e-1"], ["e-1"], ["e-2"]]
    assert not any(isinstance(o, (RecordOutcome, RecordOutcomes)) for o in ops)
    assert c.stats.acked == 2 and len(c.leases) == 0 and not c.acks


def test_receive_in_batches_records_the_acks_together_before_the_next_claim() -> None:
    c = make_core()
    claims = [batch_of("1", "2", "3"), batch_of("4")]
    flushed: list[list[str]] = []

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset()  # the plain path: acks flushed before the next claim
        if isinstance(op, Claim):
            return claims.pop(0)
        if isinstance(op, RecordOutcomes):
            ids = [o.execution_id for o in op.outcomes]
            # Each id is in the dedupe store before its ack is recorded.
            assert all(c.dedupe.seen(f"{ME}/m-{e[2:]}") is not None for e in ids)
            assert all(e in c.leases for e in ids)  # leases held until then
            flushed.append(ids)
        return ok(op)

    delivered: list[Any] = []
    flow = c.receive(wait=None, limit=4, type=None, prefetch=3)
    value: Any = None
    ops: list[Any] = []
    while True:
        done, op = advance(flow, value, None)
        if done:
            break
        ops.append(op)
        if isinstance(op, Deliver):
            delivered.append(op.message.body)
            value = None
            continue
        value = answer(op)
    assert delivered == ["1", "2", "3", "4"]
    kinds = [type(o).__name__ for o in ops]
    assert kinds == [
        "Extensions",
        "Claim",
        *["Deliver"] * 3,
        "RecordOutcomes",
        "Claim",
        "Deliver",
        "RecordOutcomes",
    ]
    assert [o.limit for o in ops if isinstance(o, Claim)] == [3, None]  # never more than wanted
    assert flushed == [["e-1", "e-2", "e-3"], ["e-4"]]
    assert c.stats.acked == 4 and len(c.leases) == 0 and not c.acks
    with pytest.raises(ValueError):
        run(c.receive(wait=None, limit=None, prefetch=0), ok)


def test_a_refused_item_of_a_batch_is_a_lost_lease_not_an_ack() -> None:
    c = make_core()
    msgs = []
    for i in ("1", "2", "3"):
        msg, _ = run(c.admit(claimed(message(Meta(id=f"m-{i}"), i), eid=f"e-{i}")), ok)
        c.leases.hold(f"e-{i}", 30, 0.0)
        c.queue_ack(msg, 10.0)
        msgs.append(msg)
    refused = Forbidden("leased to another worker", status=403, code="not_execution_owner")

    def answer(op: Any) -> Any:
        assert isinstance(op, RecordOutcomes) and len(op.outcomes) == 3
        return [OutcomeResult(execution_id="e-1"), refused, OutcomeResult(execution_id="e-3")]

    _, ops = run(c.flush_acks(), answer)
    assert len(ops) == 1
    assert c.stats.acked == 2 and c.stats.redelivered == 1
    assert len(c.leases) == 0 and not c.acks
    # A lease known lost before the flush is never reported at all.
    msg, _ = run(c.admit(claimed(message(Meta(id="m-4"), 4), eid="e-4")), ok)
    c.leases.hold("e-4", 30, 0.0)
    c.queue_ack(msg, 10.0)
    c._lease_lost("e-4", "m-4", refused)  # as a refused heartbeat does (counted once)
    _, ops = run(c.flush_acks(), ok)
    assert ops == [] and c.stats.redelivered == 2 and "e-4" not in c.leases
    # Known lost when the ack is decided: LeaseLost, nothing queued.
    msg, _ = run(c.admit(claimed(message(Meta(id="m-5"), 5), eid="e-5")), ok)
    c.leases.hold("e-5", 30, 0.0)
    c._lease_lost("e-5", "m-5", refused)
    with pytest.raises(LeaseLost):
        c.queue_ack(msg, 10.0)
    assert not c.acks and c.stats.redelivered == 3


def test_a_batch_of_acks_lost_in_transit_is_sent_again() -> None:
    c = make_core()
    for i in ("1", "2"):
        msg, _ = run(c.admit(claimed(message(Meta(id=f"m-{i}"), i), eid=f"e-{i}")), ok)
        c.leases.hold(f"e-{i}", 30, 0.0)
        c.queue_ack(msg, 10.0)
    calls: list[int] = []

    def flaky(op: Any) -> Any:
        if isinstance(op, Pause):
            return None
        calls.append(len(op.outcomes))
        if len(calls) == 1:
            raise TransportError("reset after sending")
        # The first report did record e-1 before its answer was lost.
        done = Conflict("already", status=409, code="outcome_already_recorded")
        return [done, OutcomeResult(execution_id="e-2")]

    _, ops = run(c.flush_acks(final=True), flaky)
    assert calls == [2, 2] and isinstance(ops[1], Pause)
    assert c.stats.acked == 2 and c.stats.redelivered == 0 and len(c.leases) == 0
    # Past ACK_TRIES failed reports the acks are given up (delivered again later).
    msg, _ = run(c.admit(claimed(message(Meta(id="m-3"), 3), eid="e-3")), ok)
    c.leases.hold("e-3", 30, 0.0)
    c.queue_ack(msg, 10.0)

    def down(op: Any) -> Any:
        if isinstance(op, RecordOutcomes):
            raise TransportError("down")
        return None

    _, ops = run(c.flush_acks(final=True), down)
    assert sum(isinstance(o, RecordOutcomes) for o in ops) == ACK_TRIES
    assert not c.acks and "e-3" not in c.leases and c.stats.acked == 2


def test_serve_handlers_finishing_together_share_one_report() -> None:
    c = make_core()
    flows = [c.handle(claimed(message(Meta(id=f"m-{i}"), i), eid=f"e-{i}"), str) for i in "12"]
    for i, flow in zip("12", flows, strict=True):
        c.leases.hold(f"e-{i}", 30, c.monotonic())
        done, op = advance(flow, None, None)
        assert not done and isinstance(op, CallHandler)  # both handlers are running
    # The first to finish queues its ack: another handler still runs, nothing is sent.
    done, _ = advance(flows[0], "1", None)
    assert done and len(c.acks) == 1 and "e-1" in c.leases
    assert 0 < c.next_tick_in(cap=10) <= SERVE_ACK_DELAY
    # The last to finish records both with one report.
    done, op = advance(flows[1], "2", None)
    assert not done and isinstance(op, RecordOutcomes)
    assert [o.execution_id for o in op.outcomes] == ["e-1", "e-2"]
    done, _ = advance(flows[1], ok(op), None)
    assert done and c.stats.acked == 2 and len(c.leases) == 0


def test_tick_records_acks_that_waited_long_enough() -> None:
    c = make_core()
    msg, _ = run(c.admit(claimed(message(Meta(id="m-1"), 1), eid="e-1")), ok)
    c.leases.hold("e-1", 30, c.monotonic())
    c.queue_ack(msg, 0.0)
    _, ops = run(c.tick(), ok)
    assert [type(o) for o in ops] == [RecordOutcomes]
    assert c.stats.acked == 1 and not c.acks


# -- request/reply ------------------------------------------------------------------------------


def reply_payload(cid: str, body: Any, kind: str = "reply") -> dict[str, Any]:
    return message(Meta(id=f"re-{cid}", kind=kind, correlation_id=cid), body, task="me.replies")  # type: ignore[arg-type]


def test_request_waits_for_its_reply_by_correlation_id() -> None:
    c = make_core()

    def answer(op: Any) -> Any:
        if isinstance(op, AwaitReply):
            # The reply loop meanwhile claims a stray reply and the right one.
            cid = op.pending.correlation_id
            claims = [
                claimed(reply_payload("someone-else", 0), eid="s1"),
                claimed(reply_payload(cid, {"ok": True}), eid="s2"),
            ]
            _, ops = run(c.route_replies(claims), ok)
            assert ops == []  # the acks wait for company (REPLY_ACK_DELAY)
            _, ops = run(c.flush_reply_acks(), ok)
            [outcomes] = ops
            assert not c.reply_acks and not run(c.flush_reply_acks(), ok)[1]
            assert [o.result.split(":")[0] for o in outcomes.outcomes] == [
                "late reply",
                f"reply delivered to the waiting request {cid}",
            ]
            return None
        return ok(op)

    result, ops = run(c.request(PEER, "q", timeout=5), answer)
    assert result == {"ok": True}
    assert [type(o) for o in ops] == [StartReplies, Fire, AwaitReply]
    assert ops[1].payload["cuemsg"]["reply_task"] == "me.replies"
    assert len(c.router) == 0 and c.stats.late_replies == 1


def test_error_replies_raise_remote_error() -> None:
    c = make_core()

    def answer(op: Any) -> Any:
        if isinstance(op, AwaitReply):
            cid = op.pending.correlation_id
            error = {"type": "ValueError", "message": "bad"}
            run(c.route_replies([claimed(reply_payload(cid, error, "error"))]), ok)
            return None
        return ok(op)

    with pytest.raises(RemoteError) as info:
        run(c.request(PEER, "q", timeout=5), answer)
    assert (info.value.type, info.value.message) == ("ValueError", "bad")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"status": "pending", "attempts": 0}, "no_responder"),
        ({"status": "pending", "attempts": 1}, "dead_responder"),
        ({"status": "failed", "attempts": 3}, "dead_responder"),
        (
            {"status": "delivering", "attempts": 1, "lease_expires_at": "2000-01-01T00:00:00Z"},
            "dead_responder",
        ),
        (
            {"status": "delivering", "attempts": 1, "lease_expires_at": "2999-01-01T00:00:00Z"},
            "slow_responder",
        ),
        (
            {"status": "success", "attempts": 1, "outcome": {"success": True, "result": "r"}},
            "slow_responder",
        ),
        (
            {"status": "failed", "attempts": 1, "outcome": {"success": False, "error": "expired"}},
            "slow_responder",
        ),
        ({"status": "missed", "attempts": 0}, "no_responder"),
    ],
)
def test_timeouts_tell_the_three_failures_apart(record: dict[str, Any], reason: str) -> None:
    exe = decode_model({"id": "e9", **record}, Execution)
    assert explain_timeout(exe, time.time())[0] == reason
    c = make_core()

    def answer(op: Any) -> Any:
        if isinstance(op, GetExecution):
            return exe
        return ok(op)

    with pytest.raises(RequestTimeout) as info:
        run(c.request(PEER, "q", timeout=0.01), answer)
    assert info.value.reason == reason and info.value.execution_id is not None
    assert c.stats.timeouts == 1


def test_require_responder() -> None:
    c = make_core()
    now = from_timestamp(time.time()).isoformat()
    old = from_timestamp(time.time() - 3600).isoformat()

    def registry(workers: list[Worker]) -> Callable[[Any], Any]:
        def answer(op: Any) -> Any:
            if isinstance(op, GetCue):
                return Cue(id=PEER, name="peer", payload={"task": "peer"})
            if isinstance(op, ListWorkers):
                return workers
            return ok(op)

        return answer

    alive = registry([Worker(worker_id="w", handlers=["peer"], last_heartbeat=now)])
    run(c.check_responder(PEER, None), alive)
    for workers in (
        [],
        [Worker(worker_id="w", handlers=["peer"], last_heartbeat=old)],
        [Worker(worker_id="w", handlers=["other"], last_heartbeat=now)],
    ):
        with pytest.raises(NoResponder):
            run(c.check_responder(PEER, None), registry(workers))

    # Without the registry extension: the presence stamp on the cue.
    def plain(stamp: str | None) -> Callable[[Any], Any]:
        def answer(op: Any) -> Any:
            if isinstance(op, ListWorkers):
                raise ExtensionNotAvailable("workers.list")
            payload: dict[str, Any] = {"task": "peer"}
            if stamp:
                payload[PRESENCE_KEY] = {"worker_id": "w", "at": stamp}
            return Cue(id=PEER, name="peer", payload=payload)

        return answer

    run(c.check_responder(PEER, "peer"), plain(now))
    with pytest.raises(NoResponder):
        run(c.check_responder(PEER, "peer"), plain(old))
    with pytest.raises(NoResponder):
        run(c.check_responder(PEER, "peer"), plain(None))


def _reply_loop_until(
    c: MailboxCore, claims: list[Any], close_on: tuple[type, ...] = (IdleWait,)
) -> list[Any]:
    """Run the reply loop on a server listing `claim.settle`: each Claim takes the next of
    `claims` (a ClaimResult, or an error to raise); the first `close_on` op closes the
    mailbox."""

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset({"claim.settle"})
        if isinstance(op, Claim):
            got = claims.pop(0)
            if isinstance(got, Exception):
                raise got
            return got
        if isinstance(op, close_on):
            c.closing = True
        return ok(op)

    return [op for op in run(c.reply_loop(), answer)[1] if not isinstance(op, Extensions)]


def test_reply_acks_ride_on_the_next_reply_claim() -> None:
    c = make_core()
    c.router.expect("c0")
    run(c.route_replies([claimed(reply_payload("c0", 0), eid="r0")]), ok)
    assert len(c.router) == 0 and [o.execution_id for o in c.reply_acks] == ["r0"]
    c.router.expect("c1")  # the next request: its claim carries r0's ack
    answered = ClaimResult(
        claimed=True,
        executions=[claimed(reply_payload("c1", 1), eid="r1")],
        settled=[OutcomeResult(execution_id="r0")],
    )
    ops = _reply_loop_until(c, [answered])
    # Answered, c1 no longer keeps a poll open: the loop idles, and r1's ack is recorded
    # on close, when no claim is coming to carry it.
    assert [type(o) for o in ops] == [Claim, IdleWait, RecordOutcomes]
    assert [o.execution_id for o in ops[0].settle] == ["r0"]
    assert [o.execution_id for o in ops[2].outcomes] == ["r1"]
    assert not c.reply_acks


def test_reply_acks_of_a_claim_that_failed_ride_on_the_next_one() -> None:
    c = make_core()
    c.router.expect("c0")
    run(c.route_replies([claimed(reply_payload("c0", 0), eid="r0")]), ok)
    c.router.expect("c1")
    answered = ClaimResult(
        claimed=True,
        executions=[claimed(reply_payload("c1", 1), eid="r1")],
        settled=[Forbidden("not yours", status=403, code="lease_lost")],  # logged, dropped
    )
    ops = _reply_loop_until(c, [TransportError("reset"), answered])
    assert [type(o) for o in ops] == [Claim, Pause, Claim, IdleWait, RecordOutcomes]
    assert [o.execution_id for o in ops[0].settle] == ["r0"]
    assert [o.execution_id for o in ops[2].settle] == ["r0"]  # first in line again


def test_reply_acks_of_a_claim_refused_as_a_whole_are_dropped() -> None:
    c = make_core()
    c.router.expect("c0")
    run(c.route_replies([claimed(reply_payload("c0", 0), eid="r0")]), ok)
    refused = Forbidden("key revoked", status=403, code="forbidden")
    c.router.expect("c1")
    ops = _reply_loop_until(c, [refused], close_on=(Pause,))
    # The replies come again when their leases run out, and are acked then.
    assert [type(o) for o in ops] == [Claim, Pause]
    assert not c.reply_acks


def test_router_counts_only_requests_still_waiting() -> None:
    router = ReplyRouter(threading.Event)
    env = decode_payload(reply_payload("c1", 1))
    router.expect("c1")
    router.expect("c2")
    assert len(router) == 2
    router.deliver("c1", env, "e1")
    assert len(router) == 1  # answered: its requester has yet to wake, but polls need not wait
    router.give_up("c1")
    router.give_up("c2")
    router.give_up("c2")
    assert len(router) == 0
    router.expect("c3")
    router.expect("c3")  # the same id again: one entry
    assert len(router) == 1


def test_router_races_and_late_replies() -> None:
    router = ReplyRouter(threading.Event)
    env = decode_payload(reply_payload("c1", 1))
    pending = router.expect("c1")
    assert router.deliver("c1", env, "e1") == "delivered" and pending.event.is_set()  # type: ignore[attr-defined]
    assert router.deliver("c1", env, "e1b") == "duplicate"
    assert router.give_up("c1") is pending and pending.reply is env
    assert router.deliver("c2", env, "e2") == "late"
    # A reply that races in while the requester gives up is still seen by it.
    pending = router.expect("c3")
    router.deliver("c3", env, "e3")
    assert router.give_up("c3").reply is env
    router.close()
    with pytest.raises(MailboxError):
        router.expect("c4")


# -- heartbeats ---------------------------------------------------------------------------------


def test_lease_book_renews_every_third_of_the_lease() -> None:
    book = LeaseBook()
    book.hold("e1", 30, now=100.0)
    assert book.next_due() == 110.0
    assert book.due(109.9) == []
    assert book.due(110.0) == ["e1"] and book.next_due() == 120.0
    assert book.mark_lost("e1", RuntimeError("x")) and not book.mark_lost("e1", RuntimeError())
    assert book.due(1000.0) == [] and book.next_due() is None
    book.release("e1")
    assert "e1" not in book and book.lost("e1") is None


def test_tick_heartbeats_leases_and_presence() -> None:
    c = make_core()
    c.presence.start()
    c.leases.hold("e1", 0.3, c.monotonic() - 1)

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset()
        return None

    _, ops = run(c.tick(), answer)
    assert [type(o) for o in ops] == [RenewLease, AnnounceWorker, Extensions, UpdateCue]
    assert ops[1].handlers == ["me"]
    assert ops[3].changes["payload"]["task"] == "me"
    assert PRESENCE_KEY in ops[3].changes["payload"]
    # Presence is not due again at once; with workers.list no stamp is written.
    _, ops = run(c.tick(), answer)
    assert ops == []
    assert 0 <= c.next_tick_in(cap=100) <= c.config.presence_interval


def test_serve_beats_presence_before_its_first_claim() -> None:
    """The first beat is serve's own, so none lands mid-call from the timer later."""
    c = make_core()

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset({"workers.list"})
        if isinstance(op, Claim):
            c.stopping = True  # one turn of the loop is enough
            return ClaimResult(claimed=False)
        if isinstance(op, WaitSlots):
            return 1  # one free handler slot
        return None

    _, ops = run(c.serve(lambda m: None, concurrency=1), answer)
    kinds = [type(o) for o in ops]
    assert kinds.index(AnnounceWorker) < kinds.index(Claim), kinds
    assert kinds.count(AnnounceWorker) == 1
    # The timer has nothing to send now: the beat was taken.
    assert not c.presence.due(c.monotonic())


# -- dedupe stores ------------------------------------------------------------------------------


def test_memory_dedupe_is_a_bounded_lru() -> None:
    store = MemoryDedupe(maxsize=2)
    store.remember("a")
    store.remember("b", b"r")
    assert store.seen("a") is not None  # touch a: b is now the oldest
    store.remember("c")
    assert store.seen("b") is None and store.seen("a") is not None
    assert store.seen("c") == (None,)
    with pytest.raises(ValueError):
        MemoryDedupe(0)


def test_sqlite_dedupe_survives_reopening(tmp_path: Any) -> None:
    path = tmp_path / "dedupe.db"
    store = SQLiteDedupe(path)
    store.remember("a", b"reply")
    store.remember("b")
    store.close()
    store = SQLiteDedupe(path)
    assert store.seen("a") == (b"reply",) and store.seen("b") == (None,)
    assert store.seen("c") is None
    store.close()


def test_sqlite_dedupe_on_a_file_that_is_no_database_raises_and_leaves_it(tmp_path: Any) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database, and not ours to overwrite\n" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        SQLiteDedupe(path)
    assert path.read_bytes() == b"not a database, and not ours to overwrite\n" * 100
    # Its connection was closed, not left to the collector: Python 3.13 warns of an
    # unclosed one, and the suite turns warnings into errors (`make compat`).
    gc.collect()


def test_sqlite_dedupe_never_closed_closes_its_file_when_collected(tmp_path: Any) -> None:
    store = SQLiteDedupe(tmp_path / "dedupe.db")  # as `dedupe=SQLiteDedupe(path)` is made
    store.remember("a")
    db = store._db
    del store
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")


def test_config_is_checked() -> None:
    for bad in (
        {"poll_wait": 0},
        {"max_attempts": 0},
        {"max_deliveries": 11},
        {"on_error": "explode"},
        {"presence_interval": 0},
    ):
        with pytest.raises(ValueError):
            MailboxConfig(**bad)


def test_stop_gives_back_only_this_loops_prefetched_messages() -> None:
    c = make_core()
    c.prefetched["other"] = None  # another loop's, closed early: not this loop's to give back
    released: list[tuple[str, ...]] = []
    delivered: list[Any] = []

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset({"claim.many", "claim.settle", "executions.release"})
        if isinstance(op, Claim):
            assert op.limit == 20  # the default prefetch
            return batch_of("1", "2", "3")
        if isinstance(op, Release):
            released.append(op.execution_ids)
            return [Released(execution_id=e) for e in op.execution_ids]
        if isinstance(op, Deliver):
            delivered.append(op.message.body)
            c.stopping = True
        return ok(op)

    run(c.receive(wait=None, limit=None), answer)
    assert delivered == ["1"]
    assert released == [("e-2", "e-3")]
    assert "e-2" not in c.leases and "e-3" not in c.leases
    assert list(c.prefetched) == ["other"]


def test_without_the_extension_prefetched_leases_are_left_to_run_out() -> None:
    c = make_core()
    for eid in ("e-1", "e-2"):
        c.leases.hold(eid, 30, 0.0)
        c.prefetched[eid] = None
    _, ops = run(c.release_prefetched(), ok)  # no extensions listed
    assert not any(isinstance(op, Release) for op in ops)
    assert len(c.leases) == 0 and not c.prefetched


def test_a_failed_release_leaves_the_leases_to_run_out() -> None:
    c = make_core()
    c.leases.hold("e-1", 30, 0.0)

    def answer(op: Any) -> Any:
        if isinstance(op, Extensions):
            return frozenset({"executions.release"})
        if isinstance(op, Release):
            raise TransportError("connection reset")
        return ok(op)

    released, _ = run(c.release_prefetched(["e-1"]), answer)
    assert released == 0 and len(c.leases) == 0


def test_a_claim_carries_at_most_ack_carry_acks_and_the_rest_wait_first_in_line() -> None:
    from cuemsg.mailbox._config import ACK_CARRY

    c = make_core()
    total = ACK_CARRY + 7
    for i in range(total):
        msg, _ = run(c.admit(claimed(message(Meta(id=f"m-{i}"), i), eid=f"e-{i}")), ok)
        c.leases.hold(f"e-{i}", 30, 0.0)
        c.queue_ack(msg, 10.0)
    carried: list[list[str]] = []

    def answer(op: Any) -> Any:
        assert isinstance(op, Claim)
        carried.append([o.execution_id for o in op.settle])
        settled: list[OutcomeResult | CueAPIError] = [
            OutcomeResult(execution_id=o.execution_id) for o in op.settle
        ]
        return ClaimResult(claimed=False, settled=settled)

    got, _ = run(c.claim("me", 0.0, None, settle=True), answer)
    assert got == [] and carried == [[f"e-{i}" for i in range(ACK_CARRY)]]
    assert len(c.acks) == total - ACK_CARRY and c.stats.acked == ACK_CARRY
    got, _ = run(c.claim("me", 0.0, None, settle=True), answer)  # the rest: on the next claim
    assert carried[1] == [f"e-{i}" for i in range(ACK_CARRY, total)]
    assert not c.acks and c.stats.acked == total and len(c.leases) == 0
