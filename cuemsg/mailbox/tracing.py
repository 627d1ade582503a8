"""W3C trace context across mailboxes, through OpenTelemetry when it is installed
(`pip install 'cuemsg[otel]'`: the `opentelemetry-api` package).

- An outgoing message (send, request, reply) carries the current span's
  context in its envelope headers: `traceparent` (and `tracestate` when set),
  as the W3C Trace Context standard writes them.
- A handler run by `serve()` runs in a span (`cuemsg.handle <task>`, kind
  CONSUMER), the child of the sender's span read from those headers, so one
  trace shows an agent conversation across processes. A handler's exception
  marks the span as an error; `RetryLater` is recorded as an event.

Without OpenTelemetry both are no-ops. The application configures the SDK
(exporter, sampler); cuemsg only uses the API's current tracer provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cuemsg._exceptions import RetryLater

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra is not installed
    trace = None  # type: ignore[assignment]

_TRACER = "cuemsg"
_propagator = TraceContextTextMapPropagator() if trace is not None else None


def with_trace(headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` plus the current span's `traceparent`; unchanged when there is none."""
    if trace is None or _propagator is None:
        return headers
    if not trace.get_current_span().get_span_context().is_valid:
        return headers
    out = dict(headers or {})
    _propagator.inject(out)
    return out


@contextlib.contextmanager
def handler_span(message: Any) -> Iterator[None]:
    """Run a handler of `message` (a `Delivery`) in a span, child of the sender's."""
    if trace is None or _propagator is None:
        yield
        return
    parent = _propagator.extract(getattr(message, "headers", {}) or {})
    attributes = {
        "messaging.system": "cuemsg",
        "messaging.operation": "process",
        "messaging.message.id": str(message.id),
        "messaging.destination.name": str(message.task or message.cue_id),
        "cuemsg.kind": str(message.kind),
        "cuemsg.execution_id": str(message.execution_id),
    }
    if message.thread:
        attributes["cuemsg.thread"] = str(message.thread)
    if message.sender:
        attributes["cuemsg.sender"] = str(message.sender)
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(
        f"cuemsg.handle {message.task or message.cue_id}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except RetryLater as later:
            span.add_event("retry_later", {"delay": later.delay})
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
