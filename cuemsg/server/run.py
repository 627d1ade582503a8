"""Serving the app with uvicorn: its socket, its event loop (uvloop where installed), and a
quick shutdown; for `cuemsg serve` and `cuemsg.testing`."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from cuemsg.server import redact
from cuemsg.server.app import Server
from cuemsg.server.lane import App
from cuemsg.server.protocol import TESTED_UVICORN, hot_protocol, hot_protocol_fits

T = TypeVar("T")

log = logging.getLogger("cuemsg.server")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop where it is installed, else on asyncio.

    uvicorn picks uvloop itself only in `Server.run()`; `cuemsg serve` drives
    `Server.serve()` from its own loop, so it chooses here.
    """
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it
        return asyncio.run(main)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return uvloop.run(main)  # pragma: no cover - Python 3.10


class Uvicorn(uvicorn.Server):
    """uvicorn that ends parked long-poll claims as soon as shutdown starts.

    uvicorn waits for open requests before it stops; a claim waiting up to
    30 s would hold it that long. Draining answers those claims at once
    (409, nothing claimed) so a restart is quick and loses nothing.
    """

    def __init__(self, app: Starlette, **options: object) -> None:
        options.setdefault("log_level", "warning")
        options.setdefault("timeout_graceful_shutdown", 10)
        # uvicorn's proxy-headers layer stays (its default; ~1 % of a hot request's CPU):
        # behind a reverse proxy on this host, `X-Forwarded-For` is the only client
        # address that registration's per-address limit and the access log can see.
        if isinstance(app, App) and app.lane is not None:
            if hot_protocol_fits():
                options.setdefault("http", hot_protocol(app))  # the hot lane past uvicorn's layers
            else:
                log.warning(
                    "uvicorn %s is not a release cuemsg's fast HTTP path was tested with (%s);"
                    " serving with uvicorn's own protocol, which is slower",
                    uvicorn.__version__,
                    ", ".join(v + "x" for v in TESTED_UVICORN),
                )
        super().__init__(uvicorn.Config(app, **options))  # type: ignore[arg-type]
        redact.install()  # after uvicorn set up its log handlers: no key reaches a log
        self.app_server: Server = app.state.server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.app_server.drain()
        await super().shutdown(sockets)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: the OS picks one), for `Server.run(sockets=)`.

    Binding before anything is printed means `cuemsg serve` only announces a
    server that is really listening, and `--port 0` can print the real port.

    Raises:
        OSError: the address is in use, or not ours to bind.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP, and an accepted socket inherits the listener's proto. Without it every
    # keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
