"""`GET /v1/events` (extension `events.stream`): the tenant's hand-offs as a
Server-Sent Events stream, resumable by `Last-Event-ID` (docs/cueapi.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from cuemsg.server.errors import invalid
from cuemsg.server.feed import SSE_KEEPALIVE, events_of, sse_frames, sse_ready
from cuemsg.server.state import Ctx, Server

#: Executions read at a time (a long backlog is sent in batches of this).
BATCH_ROWS = 500
#: A stream looks again this often even unwoken: changes committed by another
#: replica wake nobody here unless they made work claimable.
POLL_INTERVAL = 0.5
#: Seconds without an event before a keepalive comment.
KEEPALIVE = 15.0
#: After a wake-up, a stream waits this long before it reads, so that a busy
#: server's changes are read a batch at a time rather than one read each.
COALESCE = 0.05
#: The wait after a wake-up when the stream's last read found events: a busy
#: feed is then read (and sent, and parsed by the tail) in batches of a few
#: hundred milliseconds, and a message's fired, claimed and outcome mostly
#: land in one read of its row instead of three. A watcher sees no difference.
BUSY_COALESCE = 0.25

_PARAMS = frozenset(("cue_id", "thread", "last_event_id"))


def _last_event_id(ctx: Ctx) -> int | None:
    raw = ctx.request.headers.get("last-event-id")
    if raw is None:
        raw = ctx.request.query_params.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    if not raw.strip().isdigit():
        raise invalid("last_event_id", f"must be a non-negative integer (an event id), not {raw!r}")
    return int(raw.strip())


async def events(ctx: Ctx) -> Response:
    query = ctx.request.query_params
    for name in query:
        if name not in _PARAMS:
            raise invalid(name, f"unknown parameter (expected one of {', '.join(sorted(_PARAMS))})")
    after = _last_event_id(ctx)
    if after is None:
        after = await ctx.server.storage.event_head()
    stream = _stream(ctx.server, ctx.tenant_id, after, query.get("cue_id"), query.get("thread"))
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    server: Server, tenant_id: str, after: int, cue_id: str | None, thread: str | None
) -> AsyncIterator[bytes]:
    signal = server.feed
    wake = signal.subscribe()  # before the first read: no change slips between
    ready = False
    quiet_since = time.monotonic()
    try:
        while not server.draining:
            wake.clear()
            batch = await server.storage.read_events(
                tenant_id, after, cue_id=cue_id, limit=BATCH_ROWS
            )
            found = events_of(batch.rows, after=after, upto=batch.upto, thread=thread)
            if found:
                # One chunk for the whole read: one write here, one read at the tail.
                yield sse_frames(found)
                quiet_since = time.monotonic()
            after = max(after, batch.upto)
            if len(batch.rows) >= BATCH_ROWS:
                continue  # more backlog: no waiting
            if not ready:
                yield sse_ready(after)
                ready = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL_INTERVAL)
                await asyncio.sleep(BUSY_COALESCE if found else COALESCE)
            if time.monotonic() - quiet_since >= KEEPALIVE:
                yield SSE_KEEPALIVE
                quiet_since = time.monotonic()
    finally:
        signal.unsubscribe(wake)
