"""When a streamable HTTP session ends: the ASGI wrapper that tells the agent.

Over streamable HTTP one server process serves many MCP sessions, each
named by the `mcp-session-id` header the transport assigns. A session's
held requests must be let go when it ends, but SDK 2 gives a tool no
public hook on the end of its session. This wrapper watches the HTTP
traffic instead and calls `on_end(session_id)`:

- when the client ends the session (`DELETE` with its id);
- when no request of the session has been open for `idle_ttl` seconds
  (a client that vanished without a `DELETE`); the SDK is given the same
  idle timeout, so it drops the session at about the same time.

A session that keeps a request open (its standing `GET` event stream, a
long `check_inbox`) is never idle.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DEFAULT_SESSION_TTL", "SESSION_HEADER", "SessionEnds"]

log = logging.getLogger("cuemsg.mcp")

#: The header the streamable HTTP transport names a session with.
SESSION_HEADER = "mcp-session-id"
#: Idle seconds after which a session is taken for gone (the SDK's own default).
DEFAULT_SESSION_TTL = 1800.0
#: The idle check runs at least this often (and at least 4 times per `idle_ttl`).
_REAP_EVERY = 5.0
#: How many ended session ids are remembered (a late request of one is not tracked again).
_ENDED_KEPT = 1000


class SessionEnds:
    """ASGI middleware: calls `on_end(session_id)` once when a session ends.

    Args:
        app: the MCP streamable HTTP app.
        on_end: called with the id of each session that ended.
        idle_ttl: seconds without an open request after which a session has ended.
    """

    def __init__(self, app: ASGIApp, on_end: Callable[[str], object], idle_ttl: float) -> None:
        if not idle_ttl > 0:
            raise ValueError(f"the session idle TTL must be > 0 seconds, not {idle_ttl}")
        self.app = app
        self.on_end = on_end
        self.idle_ttl = idle_ttl
        self._open: dict[str, int] = {}  # session id -> requests in flight
        self._last: dict[str, float] = {}  # session id -> when its last request ended
        self._ended: OrderedDict[str, None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # The idle check lives as long as the app does.
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reap_forever)
                await self.app(scope, receive, send)
                tg.cancel_scope.cancel()
            return
        session = _session_of(scope) if scope["type"] == "http" else None
        if session is None or session in self._ended:
            await self.app(scope, receive, send)
            return
        self._open[session] = self._open.get(session, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            if session not in self._ended:  # a DELETE may have ended it meanwhile
                self._open[session] -= 1
                self._last[session] = time.monotonic()
                if scope["method"] == "DELETE":
                    self._end(session)

    def _end(self, session: str) -> None:
        self._open.pop(session, None)
        self._last.pop(session, None)
        self._ended[session] = None
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)
        try:
            self.on_end(session)
        except Exception:  # one session's clean-up must not take the server down
            log.exception("could not release the requests of ended session %s", session)

    def reap(self) -> list[str]:
        """End the sessions idle for longer than `idle_ttl`; answers their ids."""
        cutoff = time.monotonic() - self.idle_ttl
        idle = [s for s, at in self._last.items() if at <= cutoff and not self._open.get(s)]
        for session in idle:
            log.info("MCP session %s idle for %gs: taken for gone", session, self.idle_ttl)
            self._end(session)
        return idle

    async def _reap_forever(self) -> None:
        while True:
            await anyio.sleep(min(_REAP_EVERY, self.idle_ttl / 4))
            self.reap()


def _session_of(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == SESSION_HEADER.encode():
            return str(value.decode("latin-1"))
    return None
