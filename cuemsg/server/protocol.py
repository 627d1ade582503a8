"""uvicorn's HTTP protocol, with the hot lane's requests answered in the protocol itself.

Around each hot request uvicorn runs Python the lane does not need: a
per-request cycle object and its `asyncio.Event`, the proxy-headers
middleware, the ASGI message dicts, the checks on every response header, and
two socket writes per answer. For a request the lane takes (`lane.py`),
`HotProtocol` instead collects the body in the parser's callbacks, runs the
lane's `answer` (the same Host check, endpoint and error answer) in a task,
and writes the answer in one `transport.write`, with uvicorn's default
headers (`date`, `server`) and its access-log line. On the one-way cycle
that is 8-16 % of the server's CPU (docs/benchmarks.md).

The lane takes only plain requests; anything else goes to uvicorn's own path
unchanged: a query string, a percent-encoded path, HTTP/1.0, an upgrade,
`Expect: 100-continue`, a chunked body or one declared over the size limit,
`X-Forwarded-*` headers (uvicorn's proxy-headers layer rewrites the client
from them), a request pipelined behind one still being answered, and every
request when uvicorn limits concurrency. uvicorn's connection handling
(keep-alive timer, pipelining queue, graceful shutdown, disconnects) sees a hot
request through `_HotCycle`, which carries the attributes it reads and sets.

This leans on `HttpToolsProtocol`'s internals (its parser callbacks, `cycle`,
`pipeline`, `on_response_complete`), so it is used only with the uvicorn
releases it was tested with (`TESTED_UVICORN`); with any other, the server
serves through uvicorn's own protocol. The contract and end-to-end suites run
over it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import httptools
import uvicorn
from starlette.responses import Response
from starlette.types import Message
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from cuemsg.server.lane import App, Lane, _Hot, whole

__all__ = ["TESTED_UVICORN", "HotProtocol", "hot_protocol", "hot_protocol_fits"]

# What uvicorn refuses in an answer's header values (a line break would split the answer).
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# Request headers that send a request down uvicorn's path (see the module's docstring).
_NOT_HOT = frozenset({b"transfer-encoding", b"x-forwarded-for", b"x-forwarded-proto"})


class _HotCycle:
    """A hot request's state, where uvicorn keeps its cycle (`protocol.cycle`).

    uvicorn's protocol reads `response_complete` (pipelining, shutdown, a late
    body), sets `disconnected` and calls `message_event.set()` when the
    connection is lost, and clears `keep_alive` on shutdown.
    """

    __slots__ = (
        "body",
        "disconnected",
        "gone",
        "hit",
        "keep_alive",
        "message_event",
        "response_complete",
        "scope",
        "taken",
    )

    def __init__(self, scope: dict[str, Any], hit: tuple[_Hot, dict[str, Any]], keep: bool):
        self.scope = scope
        self.hit = hit
        self.body = b""
        self.taken = False  # the body was handed to the endpoint
        self.keep_alive = keep
        self.disconnected = False
        self.response_complete = False
        self.gone: asyncio.Event | None = None  # made when a receive has to wait
        self.message_event = self

    def set(self) -> None:
        """uvicorn's signal, from `connection_lost`, that the client is gone."""
        if self.disconnected and self.gone is not None:
            self.gone.set()

    async def receive(self) -> Message:
        """ASGI `receive`: the whole body once, then `http.disconnect` when the client
        hangs up (a step that would wait means it has not: `Ctx.client_gone`)."""
        if not self.taken:
            self.taken = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not (self.disconnected or self.response_complete):
            # An Event: each wait its own future, so a wait abandoned after one step
            # (`client_gone`, at every wake of a parked claim) leaves nothing behind.
            if self.gone is None:
                self.gone = asyncio.Event()
            await self.gone.wait()
        return {"type": "http.disconnect"}


class HotProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` answering the hot lane's requests itself (see the module)."""

    app_with_lane: ClassVar[App]
    max_body: ClassVar[int]  # the server's `max_body_bytes`
    answered: ClassVar[int] = 0  # requests answered here, not on uvicorn's path (for tests)

    def on_headers_complete(self) -> None:
        cycle = self._hot_cycle()
        if cycle is None:
            super().on_headers_complete()
        else:
            self.cycle = cycle  # type: ignore[assignment]

    def _hot_cycle(self) -> _HotCycle | None:
        """A cycle for this request if the lane takes it, else None (uvicorn's path)."""
        lane: Lane | None = self.app_with_lane.lane
        previous = self.cycle
        if (
            lane is None
            or self.limit_concurrency is not None
            or self.pipeline
            or (previous is not None and not previous.response_complete)
            or self.expect_100_continue
            or self.parser.should_upgrade()
            or self.parser.get_http_version() != "1.1"
        ):
            return None
        for name, value in self.headers:
            if name in _NOT_HOT:
                return None
            if name == b"content-length" and not (value.isdigit() and int(value) <= self.max_body):
                return None
        url = httptools.parse_url(self.url)
        if url.query is not None or b"%" in url.path:
            return None
        scope: dict[str, Any] = self.scope
        path = url.path.decode("ascii")
        scope["method"] = self.parser.get_method().decode("ascii")
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + url.path
        scope["query_string"] = b""
        hit = lane.match(scope)
        if hit is None:
            return None
        scope["app"] = self.app_with_lane
        scope["router"] = self.app_with_lane.router
        return _HotCycle(scope, hit, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is _HotCycle:
            cycle.body += body  # bounded: the declared length is within the limit
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is _HotCycle:
            task = self.loop.create_task(self._answer(cycle))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
        else:
            super().on_message_complete()

    async def _answer(self, cycle: _HotCycle) -> None:
        lane = self.app_with_lane.lane
        assert lane is not None  # a hot cycle is made only with a lane
        try:
            response = await lane.answer(*cycle.hit, cycle.scope, cycle.receive)
            data = self._encode(response, cycle)
        except asyncio.CancelledError:  # uvicorn's shutdown gave up waiting: as its own
            cycle.response_complete = True
            self.transport.close()
            raise
        except Exception:  # the lane answers the endpoint's errors; this is a bug of ours
            self.logger.exception("Exception in ASGI application\n")
            cycle.keep_alive = False
            data = self._encode(_INTERNAL_ERROR, cycle)
        self._finish(cycle, data)

    def _encode(self, response: Response, cycle: _HotCycle) -> bytes:
        """The answer's bytes: status line, uvicorn's default headers, the response's."""
        if not whole(response):  # hot handlers answer whole bodies; a streamed one is a bug
            raise RuntimeError(f"a hot route answered with a {type(response).__name__}")
        status = response.status_code
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            if _BAD_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", bytes(response.body))
        if self.access_log:
            scope = cycle.scope
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        return b"".join(parts)

    def _finish(self, cycle: _HotCycle, data: bytes) -> None:
        """Write the answer (unless the client is gone) and let uvicorn go on."""
        cycle.response_complete = True
        type(self).answered += 1
        if cycle.disconnected or self.transport.is_closing():
            return
        self.transport.write(data)
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()  # the keep-alive timer, or a pipelined request


# uvicorn's answer to an app's error (with `connection: close`, as keep-alive ends).
_INTERNAL_ERROR = Response(b"Internal Server Error", 500, media_type="text/plain")


#: uvicorn releases whose `HttpToolsProtocol` internals `HotProtocol` was tested with.
TESTED_UVICORN = ("0.54.", "0.55.")


def hot_protocol_fits() -> bool:
    """Whether the installed uvicorn is one `HotProtocol` was tested with (else
    `cuemsg serve` keeps uvicorn's own protocol: slower, never wrong)."""
    return uvicorn.__version__.startswith(TESTED_UVICORN)


def hot_protocol(app: App) -> type[HotProtocol]:
    """`HotProtocol` for this app (uvicorn makes one protocol per connection from a class)."""
    limit = app.state.server.settings.max_body_bytes
    return type("HotProtocol", (HotProtocol,), {"app_with_lane": app, "max_body": limit})
