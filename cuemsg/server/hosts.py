"""The DNS-rebinding guard: a server bound to loopback answers only requests
whose `Host` names loopback (`127.0.0.1`, `localhost`, `::1`) or the bound
name. A web page on `evil.example` whose name an attacker re-points at
127.0.0.1 sends `Host: evil.example` and gets 421 `misdirected_request`.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import problem
from cuemsg.server.settings import LOOPBACK_NAMES

_PASSED_KEPT = 256


def host_name(header: str) -> str:
    """The name part of a `Host` header: `[::1]:80` -> `::1`, `a.b:8` -> `a.b`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Which `Host` names a server bound to `bound` answers for, and the refusal of others
    (used by `HostGuard` and by the hot lane, `lane.py`)."""

    def __init__(self, bound: str) -> None:
        self.allowed = frozenset(LOOPBACK_NAMES | {host_name(bound)})
        # `Host` values already found allowed, as sent (a client sends the same one
        # every request): most checks are one set lookup. Bounded: values vary by port.
        self._passed: set[bytes] = set()

    def refusal(self, scope: Scope) -> Response | None:
        """The 421 answer when the request's `Host` is not ours, else None."""
        header = b""
        for key, value in scope["headers"]:
            if key == b"host":
                header = value
                break
        if header in self._passed:
            return None
        name = host_name(header.decode("latin-1"))
        if name in self.allowed:
            if len(self._passed) < _PASSED_KEPT:
                self._passed.add(header)
            return None
        return problem(
            ApiProblem(
                421,
                "misdirected_request",
                f"this server answers only for {', '.join(sorted(self.allowed))}, "
                f"not Host {name or '(none)'!r} (DNS rebinding guard)",
            )
        )


class HostGuard:
    """ASGI middleware refusing requests for any other host name."""

    def __init__(self, app: ASGIApp, check: HostCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = self.check.refusal(scope)
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
