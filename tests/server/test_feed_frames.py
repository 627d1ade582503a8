"""The feed's rendering and framing without a server: event times rendered as
`wire.iso` renders them, a read's events framed in one buffer, and the
client's SSE parser fed the stream in pieces cut anywhere."""

from __future__ import annotations

import math
import random

import pytest

from cuemsg._events import SSEParser, parse_sse
from cuemsg.server.feed import Event, _at, sse, sse_frames, sse_ready
from cuemsg.server.wire import iso


def test_event_times_render_as_iso_renders_them() -> None:
    rng = random.Random(14)
    now = 1_764_570_756.0
    cases: list[float | None] = [None, 0.0, 1.0, now, now + 0.5, -1.5, math.nan, 1e18, 2.0**35]
    cases += [now + rng.random() for _ in range(20_000)]
    cases += [rng.uniform(0, 2.0**35) for _ in range(20_000)]
    # Fractions whose microseconds are exactly half-way (k * 7812.5): rounded to even.
    cases += [now + k / 128 for k in range(128)]
    # Fractions that round up to the next whole second.
    cases += [now + 0.9999995 + i * 1e-8 for i in range(50)]
    cases += [math.nextafter(float(s), 0.0) for s in range(1, 2000)]
    for ts in cases:
        assert _at(ts) == iso(ts), ts


def _event(seq: int, type: str = "fired") -> Event:
    return Event(
        seq=seq,
        type=type,
        at=iso(1_764_570_756.25),
        execution_id=f"e{seq}",
        cue_id="c",
        cue_name="inbox",
        task="inbox",
        message_id="m",
        kind="message",
        sender="s",
        thread=None,
        status="pending",
    )


def test_a_batch_is_the_frames_one_after_another() -> None:
    events = [_event(1), _event(2, "claimed"), _event(3, "outcome")]
    assert sse_frames(events) == b"".join(sse(e) for e in events)
    assert sse_frames([]) == b""


def test_the_parser_reads_a_stream_cut_anywhere() -> None:
    stream = (
        sse_frames([_event(1), _event(2, "claimed")])
        + b": keepalive\n\n"
        + sse_ready(2)
        + sse(_event(3, "outcome"))
    )
    whole = SSEParser().feed(stream)
    assert [(e.id, e.type) for e in whole] == [
        (1, "fired"),
        (2, "claimed"),
        (2, "ready"),
        (3, "outcome"),
    ]
    for cut in range(1, len(stream)):
        parser = SSEParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [(e.id, e.type, e.raw) for e in got] == [(e.id, e.type, e.raw) for e in whole]
    one_by_one = SSEParser()
    got = [e for i in range(len(stream)) for e in one_by_one.feed(stream[i : i + 1])]
    assert [e.raw for e in got] == [e.raw for e in whole]


def test_the_parser_takes_every_line_ending_even_cut_between_cr_and_lf() -> None:
    frames = [b'id: 7\r\nevent: fired\r\ndata: {"a":1}\r\n\r\n', b"id: 8\revent: x\rdata: 2\r\r"]
    stream = b"".join(frames) + b"id: 9\ndata: 3\ndata: 4\n\n"
    expected = [(7, "fired", '{"a":1}'), (8, "x", "2"), (9, "message", "3\n4")]
    for cut in range(1, len(stream)):
        parser = SSEParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [(e.id, e.type, e.raw) for e in got] == expected, cut
    # An event not yet ended by its blank line waits for it.
    parser = SSEParser()
    assert parser.feed(b"id: 1\ndata: x\n") == []
    assert [e.raw for e in parser.feed(b"\n")] == ["x"]


def test_parse_sse_by_lines_still_reads_events() -> None:
    lines = ["id: 4", "event: claimed", 'data: {"seq":4}', "", ": keepalive", "", "data: y", ""]
    assert [(e.id, e.type, e.data if e.type != "message" else e.raw) for e in parse_sse(lines)] == [
        (4, "claimed", {"seq": 4}),
        (None, "message", "y"),
    ]


def test_event_data_that_is_not_a_json_object_is_a_value_error() -> None:
    [broken, listed] = SSEParser().feed(b"data: {nope\n\ndata: [1]\n\n")
    with pytest.raises(ValueError, match="not JSON"):
        _ = broken.data
    with pytest.raises(ValueError, match="not a JSON object"):
        _ = listed.data
