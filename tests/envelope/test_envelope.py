"""The envelope, with no network: encoding, decoding, versions, sizes, ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuemsg._exceptions import EnvelopeError
from cuemsg.envelope import (
    FORMAT_VERSION,
    MAX_REQUEST_BYTES,
    NAMESPACE,
    Envelope,
    Meta,
    body_of,
    build_payload,
    decode_body,
    decode_payload,
    encode_body,
    meta_of,
    new_id,
    outcome_meta_of,
    outcome_metadata,
    outside_fields,
    payload_bytes,
    payload_from_bytes,
    utcnow,
    with_attempt,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


class Order(msgspec.Struct):
    sku: str
    qty: int
    when: dt.datetime | None = None


class Ticket(pydantic.BaseModel):
    title: str
    priority: int = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


def roundtrip(body: Any, type: Any = None) -> Any:
    """Encode as a sender would, decode as the server then a receiver would."""
    meta = Meta(id=new_id(), kind="message")
    payload = build_payload(meta=meta, body=body, task="t", reply_cue_id="cue_x")
    wire = msgspec.json.decode(payload_bytes(payload))  # what the server stores
    env = decode_payload(wire)
    assert env.meta == meta
    return decode_body(env.message, type)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_any_json_body_round_trips(body: Any) -> None:
    assert roundtrip(body) == body


def test_struct_pydantic_and_dataclass_bodies_come_back_typed() -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert roundtrip(Order(sku="a", qty=2, when=when), Order) == Order("a", 2, when)
    assert roundtrip(Ticket(title="x"), Ticket) == Ticket(title="x", priority=1)
    assert roundtrip(Point(1, 2), Point) == Point(1, 2)
    # Nested models inside plain containers are encoded too.
    assert roundtrip([Ticket(title="y")], list[Ticket]) == [Ticket(title="y")]
    # Without a type the receiver gets builtins.
    assert roundtrip(Order(sku="a", qty=2)) == {"sku": "a", "qty": 2, "when": None}


def test_body_that_does_not_fit_the_receivers_type() -> None:
    with pytest.raises(EnvelopeError, match="not a valid Order"):
        roundtrip({"sku": 1}, Order)
    with pytest.raises(EnvelopeError, match="not a valid Ticket"):
        roundtrip({"nope": 1}, Ticket)


@pytest.mark.parametrize("body", [object(), {"a": object()}, {1: {2, object()}}])
def test_unencodable_bodies(body: Any) -> None:
    with pytest.raises(EnvelopeError, match="cannot be encoded"):
        encode_body(body)


def test_oversized_body_is_refused_before_sending() -> None:
    with pytest.raises(EnvelopeError, match="too large"):
        build_payload(meta=Meta(id=new_id()), body="x" * MAX_REQUEST_BYTES)
    # Just under the limit is fine.
    build_payload(meta=Meta(id=new_id()), body="x" * (MAX_REQUEST_BYTES - 4096))


def test_payload_layout_keeps_cuemsg_under_one_key() -> None:
    meta = Meta(id="01ABC", kind="request", sender="cue_a", correlation_id="01ABC")
    payload = msgspec.json.decode(
        payload_bytes(build_payload(meta=meta, body={"q": 1}, task="svc", reply_cue_id="cue_a"))
    )
    assert set(payload) == {"task", "message", "reply_cue_id", NAMESPACE}
    assert payload["task"] == "svc"
    assert payload["message"] == {"q": 1}
    assert payload[NAMESPACE]["v"] == FORMAT_VERSION
    assert payload[NAMESPACE]["kind"] == "request"
    # No task: the recipient cue's own payload task applies (merge), so none is written.
    assert "task" not in build_payload(meta=meta, body=1)


def test_foreign_payloads_are_messages_without_metadata() -> None:
    env = decode_payload({"task": "inbox", "message": {"hello": "world"}})
    assert env == Envelope(task="inbox", message={"hello": "world"})
    assert env.foreign and env.expires_at is None
    # No "message" key: the body is the rest of the payload.
    env = decode_payload({"task": "inbox", "a": 1, "b": [2]})
    assert env.message == {"a": 1, "b": [2]}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([1, 2], "not a JSON object"),
        ("text", "not a JSON object"),
        ({"task": 5, "message": 1}, "task is not a string"),
        ({"task": "t", "reply_cue_id": 5}, "reply_cue_id is not a string"),
        ({"task": "t", NAMESPACE: "x"}, "is not an object"),
        ({"task": "t", NAMESPACE: {"v": 2, "id": "x"}}, "newer than this cuemsg reads"),
        ({"task": "t", NAMESPACE: {"v": "1", "id": "x"}}, "not a positive integer"),
        ({"task": "t", NAMESPACE: {"v": 1}}, "malformed"),
        ({"task": "t", NAMESPACE: {"v": 1, "id": "x", "kind": "shout"}}, "malformed"),
    ],
)
def test_bad_envelopes_are_clear_errors(payload: Any, match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        decode_payload(payload)


def test_unknown_meta_fields_of_the_same_version_are_ignored() -> None:
    env = decode_payload(
        {"task": "t", "message": 1, NAMESPACE: {"v": 1, "id": "x", "future_field": True}}
    )
    assert env.meta is not None and env.meta.id == "x"


def test_expiry_is_read_as_unix_seconds() -> None:
    at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    payload = build_payload(meta=Meta(id="x", expires_at=at), body=None)
    env = decode_payload(msgspec.json.decode(payload_bytes(payload)))
    assert env.expires_at == at.timestamp()


def test_ids_are_sortable_and_unique() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _id_time(message_id: str) -> int:
    """The milliseconds an id's first 10 characters hold (Crockford base32)."""
    return sum(_CROCKFORD.index(ch) << (5 * (9 - i)) for i, ch in enumerate(message_id[:10]))


def test_ids_hold_their_time_and_stay_unique_across_milliseconds() -> None:
    # Ids made over more milliseconds than one read of random bytes serves (64) stay
    # unique and ordered, each holding the millisecond it was made in.
    ids = []
    for _ in range(150):
        before = time.time_ns() // 1_000_000
        ids.append(new_id())
        assert before <= _id_time(ids[-1]) <= time.time_ns() // 1_000_000
        time.sleep(0.0011)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(set(i) <= set(_CROCKFORD) for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    # Random bytes read ahead by the parent are dropped in the child: two processes
    # making an id in the same millisecond must not make the same one.
    new_id()  # the parent has random bytes in hand now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, ",".join(new_id() for _ in range(20)).encode())
        finally:
            os._exit(0)
    os.close(write)
    ours = [new_id() for _ in range(20)]
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode().split(",")
    os.waitpid(pid, 0)
    assert len(theirs) == 20
    assert {i[10:] for i in ours}.isdisjoint(i[10:] for i in theirs)


def test_utcnow_is_utc_to_the_millisecond() -> None:
    before = time.time()
    now = utcnow()
    assert now.tzinfo is dt.timezone.utc and now.microsecond % 1000 == 0
    assert before - 0.001 <= now.timestamp() <= time.time()


def test_stored_payload_round_trip() -> None:
    payload = build_payload(meta=Meta(id="x"), body={"a": [1, 2]})
    assert payload_from_bytes(payload_bytes(payload))["message"] == {"a": [1, 2]}
    with pytest.raises(EnvelopeError):
        payload_from_bytes(b"[1]")
    with pytest.raises(EnvelopeError):
        payload_from_bytes(b"{nope")


def wire(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` as a receiver sees it (JSON builtins, not `msgspec.Raw`)."""
    decoded: dict[str, Any] = msgspec.json.decode(payload_bytes(payload))
    return decoded


def test_lenient_readers_of_a_payload_as_stored() -> None:
    meta = Meta(id=new_id(), kind="request")
    payload = wire(build_payload(meta=meta, body={"x": 1}, task="t", reply_cue_id="cue_r"))
    assert meta_of(payload) == {"v": FORMAT_VERSION, "id": meta.id, "kind": "request"}
    assert body_of(payload) == {"x": 1}
    assert outside_fields(payload) == {"task": "t", "reply_cue_id": "cue_r"}
    # Foreign, malformed or not a payload at all: nothing, never an error.
    assert meta_of({"task": "t", "message": 1}) is None
    assert meta_of({NAMESPACE: "not an object"}) is None
    for junk in (None, [1], "text"):
        assert meta_of(junk) is None and body_of(junk) is None and outside_fields(junk) == {}


def test_with_attempt_rewrites_only_the_attempt() -> None:
    meta = Meta(id="m1", thread="t-1")
    payload = wire(build_payload(meta=meta, body="b", task="t"))
    again = with_attempt(payload, 3, message_id="m1")
    assert decode_payload(again).meta == Meta(id="m1", thread="t-1", attempt=3)
    assert payload[NAMESPACE].get("attempt") is None  # the original is left as it was
    # A foreign message gets a minimal envelope, so its re-fire is the same message.
    foreign = with_attempt({"task": "t", "message": "b"}, 2, message_id="exec:e1")
    assert decode_payload(foreign).meta == Meta(id="exec:e1", attempt=2)


def test_outcome_metadata_round_trips_and_drops_nones() -> None:
    metadata = outcome_metadata("replied", id="m1", reply_execution_id=None)
    assert metadata == {NAMESPACE: {"state": "replied", "id": "m1"}}
    assert outcome_meta_of({"success": True, "metadata": metadata}) == {
        "state": "replied",
        "id": "m1",
    }
    for outcome in (None, {}, {"metadata": None}, {"metadata": {NAMESPACE: 5}}):
        assert outcome_meta_of(outcome) == {}


def test_new_id_is_a_ulid_of_the_current_millisecond() -> None:
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(50)]
    after = time.time_ns() // 1_000_000
    for made in ids:
        assert len(made) == 26 and set(made) <= set(crockford)
        n = 0
        for digit in made:  # base 32, most significant digit first
            n = n * 32 + crockford.index(digit)
        assert n < 1 << 128  # a ULID's 128 bits: the two top bits of 130 are clear
        assert before <= n >> 80 <= after  # the time part is the millisecond it was made in
