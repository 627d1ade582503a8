"""W3C trace context across two mailboxes, read back with the OpenTelemetry SDK's
in-memory exporter: the request carries `traceparent`, the responder's handler
runs in a child span of the requester's, an error marks the span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cuemsg._exceptions import RemoteError
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import AsyncMailbox, Mailbox
from cuemsg.mailbox.tracing import with_trace
from cuemsg.testing import RunningServer
from tests.mailbox.conftest import POLL, serving

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    # The global provider can be set once per process: this module's, kept for the run.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


def _handled(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name.startswith("cuemsg.handle")]


def test_a_request_is_one_trace_across_two_mailboxes(
    client: CueClient, spans: InMemorySpanExporter
) -> None:
    seen: dict[str, Any] = {}

    def handler(msg: Any) -> Any:
        seen["headers"] = dict(msg.headers)
        seen["context"] = trace.get_current_span().get_span_context()
        return msg.body * 2

    tracer = trace.get_tracer("test")
    with (
        Mailbox.open(client, "tr-a", poll_wait=POLL) as a,
        Mailbox.open(client, "tr-b", poll_wait=POLL) as b,
        serving(b, handler),
        tracer.start_as_current_span("agent-a asks") as asking,
    ):
        assert a.request(b.address, 21, timeout=10) == 42
    parent = asking.get_span_context()
    # version-trace id-parent span id-flags (sampled, and more in newer levels)
    assert seen["headers"]["traceparent"].startswith(
        f"00-{parent.trace_id:032x}-{parent.span_id:016x}-"
    )
    [span] = _handled(spans)
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is not None and span.parent.span_id == parent.span_id
    assert span.context.trace_id == parent.trace_id == seen["context"].trace_id
    assert span.context.span_id == seen["context"].span_id  # the handler ran inside it
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "cuemsg"
    assert span.attributes["cuemsg.kind"] == "request"
    assert span.attributes["cuemsg.sender"] == a.address


def test_a_failing_handler_marks_its_span(client: CueClient, spans: InMemorySpanExporter) -> None:
    def broken(msg: Any) -> Any:
        raise ValueError("no such thing")

    with (
        Mailbox.open(client, "tf-a", poll_wait=POLL) as a,
        Mailbox.open(client, "tf-b", poll_wait=POLL) as b,
        serving(b, broken),
        trace.get_tracer("test").start_as_current_span("ask"),
        pytest.raises(RemoteError),
    ):
        a.request(b.address, 1, timeout=10)
    [span] = _handled(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_no_span_no_header(client: CueClient) -> None:
    assert with_trace({"a": "b"}) == {"a": "b"}
    assert with_trace(None) is None
    got: list[dict[str, str]] = []
    with (
        Mailbox.open(client, "tn-a", poll_wait=POLL) as a,
        Mailbox.open(client, "tn-b", poll_wait=POLL) as b,
    ):
        a.send(b.address, 1)
        for msg in b.receive(wait=5, limit=1):
            got.append(dict(msg.headers))
    assert got == [{}]


@pytest.mark.anyio
async def test_the_async_mailbox_traces_alike(
    server: RunningServer, spans: InMemorySpanExporter
) -> None:
    async def handler(msg: Any) -> Any:
        return "ok"

    async with (
        AsyncCueClient(server.new_key(), server.base_url) as aclient,
        AsyncMailbox.open(aclient, "ta-a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "ta-b", poll_wait=POLL) as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: b.serve(handler))
        with trace.get_tracer("test").start_as_current_span("async ask") as asking:
            assert await a.request(b.address, 1, timeout=10) == "ok"
        b.stop()
    [span] = _handled(spans)
    assert span.parent is not None
    assert span.parent.span_id == asking.get_span_context().span_id
