"""`AsyncKeepAliveTransport`: the async client's httpx transport, HTTP/1.1 of its own.

`AsyncCueClient` sends with it by default, as `CueClient` sends with
`KeepAliveTransport`: httpx stays the client's API and its exceptions the
error vocabulary (`_retry.py` reads them), but each request leaves in one
write (head and body together, where httpcore writes them apart and wakes
the server twice) and the answer is parsed here, without httpcore's and
h11's layers. Works on asyncio (on asyncio's own transports, without
anyio's stream layers) and trio (on anyio streams): `_async_conns.py`.

What it does, as `KeepAliveTransport` does (see `_transport.py`):
- one pool of idle keep-alive connections per (scheme, host, port), last in
  first out, at most `max_idle` each; an idle connection whose socket is
  readable (the server's EOF, stray bytes) or that waited longer than
  `keepalive_expiry` is closed, never reused;
- per-request timeouts from `request.extensions["timeout"]`: `connect` for
  opening (TCP and TLS), `write` for sending, `read` for the whole answer;
- answers framed by Content-Length, chunked, or the end of the connection;
  1xx answers skipped; the whole answer read before it is returned;
- the same httpx exceptions for the same failures: `ConnectError` /
  `ConnectTimeout` (the request never left), `WriteError` / `WriteTimeout`,
  `RemoteProtocolError` / `ReadError` / `ReadTimeout` (the answer was lost).
  A connection that failed, or whose request was cancelled, is closed.

What it does not do: proxies, HTTP/2, client certificates, streaming.
"""

from __future__ import annotations

import ssl
import time
import urllib.request

import anyio
import httpx

from cuemsg.cueapi._async_conns import Answer, Conn, connect
from cuemsg.cueapi._http11 import Head, encode_request, whole_response
from cuemsg.cueapi._transport import (
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_IDLE,
    Origin,
    origin_of,
)

__all__ = ["AsyncKeepAliveTransport"]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AsyncKeepAliveTransport(httpx.AsyncBaseTransport):
    """A keep-alive HTTP/1.1 transport for `httpx.AsyncClient` on anyio streams.

    Args:
        max_idle: idle connections kept per (scheme, host, port); more are closed.
        keepalive_expiry: seconds an idle connection may wait to be reused
            (None: no limit; the readability check still applies).
        ssl_context: for https (default: httpx's, made on the first https connection).

    Attributes:
        connections_opened: connections opened so far (for tests and benchmarks).
    """

    def __init__(
        self,
        *,
        max_idle: int = DEFAULT_MAX_IDLE,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[tuple[Conn, float]]] = {}
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(idle={self.idle_count})"

    @property
    def idle_count(self) -> int:
        """Idle connections in the pool now, all origins together."""
        return sum(len(idle) for idle in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = origin_of(request.url, request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body
            body = await request.aread()
        data = encode_request(request, body)
        head, content = await self.exchange(origin, data, request.method, timeouts, request)
        # The body is in hand: it is read here (decoding gzip, say, on httpx's sync
        # path, cheaper than the async iterators `aread()` would go through).
        return whole_response(request, head, content)

    async def exchange(
        self,
        origin: Origin,
        data: bytes,
        method: str,
        timeouts: dict[str, float | None],
        request: httpx.Request | None = None,
    ) -> tuple[Head, bytes]:
        """Send `data`, a whole request's bytes, to `origin`; read the whole answer.

        As `KeepAliveTransport.exchange`: what `AsyncCueClient` calls for the
        requests it encodes itself (`request` only goes into the exceptions).

        Raises:
            httpx.TransportError: the subclasses in the module's docstring.
        """
        conn = await self._checkout(origin, timeouts.get("connect"), request)
        try:
            answer = await self._exchange(conn, method, data, timeouts, request)
        except BaseException:  # a failure or a cancellation: the connection is in no known state
            await conn.close()
            raise
        if answer.reusable:
            await self._checkin(origin, conn)
        else:
            await conn.close()
        return (answer.version, answer.status, answer.reason, answer.headers), answer.content

    async def aclose(self) -> None:
        """Close every idle connection (connections in use close when their request ends)."""
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn, _ in conns]
        self._idle.clear()
        for conn in idle:
            await conn.close()

    # -- the pool -----------------------------------------------------------------------------

    async def _checkout(
        self, origin: Origin, connect_timeout: float | None, request: httpx.Request | None
    ) -> Conn:
        """A usable idle connection to `origin`, or a new one."""
        idle = self._idle.get(origin)
        while idle:
            conn, since = idle.pop()
            expiry = self._keepalive_expiry
            if (expiry is not None and time.monotonic() - since > expiry) or conn.stale():
                await conn.close()
                continue
            return conn
        return await self._connect(origin, connect_timeout, request)

    async def _checkin(self, origin: Origin, conn: Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if not self._closed and len(idle) < self._max_idle:
            idle.append((conn, time.monotonic()))
        else:
            await conn.close()

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> Conn:
        scheme, host, port = origin
        tls = self._get_ssl_context() if scheme == "https" else None
        try:
            conn = await connect(host, port, tls, timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(_describe(exc), request=request) from exc
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            # refused, unreachable, DNS (gaierror), TLS (SSLError, or the peer hung up)
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        self.connections_opened += 1
        return conn

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # The same trust as httpx's default transport (certifi, or SSL_CERT_FILE/DIR).
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    # -- one exchange -------------------------------------------------------------------------

    @staticmethod
    async def _exchange(
        conn: Conn,
        method: str,
        data: bytes,
        timeouts: dict[str, float | None],
        request: httpx.Request | None,
    ) -> Answer:
        """Send `data` on `conn` and read the whole answer."""
        try:
            await conn.send(data, timeouts.get("write"))
        except TimeoutError as exc:
            raise httpx.WriteTimeout(_describe(exc), request=request) from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.WriteError(_describe(exc), request=request) from exc
        try:
            return await conn.answer(method, timeouts.get("read"))
        except TimeoutError as exc:
            raise httpx.ReadTimeout(_describe(exc), request=request) from exc
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.DelimiterNotFound) as exc:
            # closed before a whole answer, or a head too long to be one
            raise httpx.RemoteProtocolError(_describe(exc), request=request) from exc
        except ValueError as exc:  # a malformed status line, header, length or chunk
            raise httpx.RemoteProtocolError(_describe(exc), request=request) from exc
        except (OSError, anyio.BrokenResourceError) as exc:  # reset by peer, and the like
            raise httpx.ReadError(_describe(exc), request=request) from exc


def default_async_transport() -> AsyncKeepAliveTransport | None:
    """`AsyncKeepAliveTransport`, or None (httpx's own) when the environment names a proxy."""
    proxies = urllib.request.getproxies()
    if any(scheme in proxies for scheme in ("http", "https", "all")):
        return None
    return AsyncKeepAliveTransport()
