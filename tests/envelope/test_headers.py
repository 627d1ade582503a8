"""`with_header`: a header added to a payload's envelope, never to a foreign payload."""

from __future__ import annotations

from cuemsg.envelope import Meta, build_payload, decode_payload, with_header


def test_a_header_joins_the_envelope_and_the_rest_stays() -> None:
    payload = build_payload(meta=Meta(id="m1", headers={"a": "b"}), body={"x": 1}, task="t")
    out = with_header(payload, "cuemsg-redrive-of", "e1")
    meta = decode_payload(out).meta
    assert meta is not None
    assert meta.headers == {"a": "b", "cuemsg-redrive-of": "e1"}
    assert (meta.id, out["task"]) == ("m1", "t")
    assert decode_payload(payload).meta.headers == {"a": "b"}  # type: ignore[union-attr]


def test_a_foreign_payload_is_left_alone() -> None:
    foreign = {"task": "t", "message": "hi"}
    assert with_header(foreign, "h", "v") == foreign
