"""`as_redrive`: the envelope of a redriven message names the dead execution and
counts one more attempt, outside the signed fields; a foreign payload is left alone."""

from __future__ import annotations

from cuemsg.envelope import Meta, as_redrive, build_payload, decode_payload, signed_content


def test_the_redrive_link_stays_out_of_the_signature() -> None:
    payload = build_payload(meta=Meta(id="m1", headers={"a": "b"}), body={"x": 1}, task="t")
    again = as_redrive(payload, "e1")
    meta = decode_payload(again).meta
    assert meta is not None
    assert (meta.redrive_of, meta.attempt, meta.id, meta.headers) == ("e1", 2, "m1", {"a": "b"})
    assert signed_content(again) == signed_content(payload)  # a signature still verifies
    before = decode_payload(payload).meta
    assert before is not None and before.redrive_of is None
    assert as_redrive(again, "e2")["cuemsg"]["attempt"] == 3


def test_a_foreign_payload_is_left_alone() -> None:
    foreign = {"task": "t", "message": "hi"}
    assert as_redrive(foreign, "e1") == foreign
