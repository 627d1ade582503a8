"""The DNS-rebinding guard: a server bound to loopback answers only requests
whose `Host` names loopback (`127.0.0.1`, `localhost`, `::1`) or the bound
name. A web page on `evil.example` whose name an attacker re-points at
127.0.0.1 sends `Host: evil.example` and gets 421 `misdirected_request`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import problem
from cuemsg.server.settings import LOOPBACK_NAMES


def host_name(header: str) -> str:
    """The name part of a `Host` header: `[::1]:80` -> `::1`, `a.b:8` -> `a.b`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """ASGI middleware refusing requests for any other host name."""

    def __init__(self, app: ASGIApp, bound: str) -> None:
        self.app = app
        self.allowed = frozenset(LOOPBACK_NAMES | {host_name(bound)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v for k, v in scope["headers"] if k == b"host"), b"")
            name = host_name(header.decode("latin-1"))
            if name not in self.allowed:
                answer = problem(
                    ApiProblem(
                        421,
                        "misdirected_request",
                        f"this server answers only for {', '.join(sorted(self.allowed))}, "
                        f"not Host {name or '(none)'!r} (DNS rebinding guard)",
                    )
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
