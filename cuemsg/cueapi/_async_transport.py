"""`AsyncKeepAliveTransport`: the async client's httpx transport, HTTP/1.1 on anyio streams.

`AsyncCueClient` sends with it by default, as `CueClient` sends with
`KeepAliveTransport`: httpx stays the client's API and its exceptions the
error vocabulary (`_retry.py` reads them), but each request leaves in one
write (head and body together, where httpcore writes them apart and wakes
the server twice) and the answer is parsed here, without httpcore's and
h11's layers. Works on asyncio and trio (anyio).

What it does, as `KeepAliveTransport` does (see `_transport.py`):
- one pool of idle keep-alive connections per (scheme, host, port), last in
  first out, at most `max_idle` each; an idle connection whose socket is
  readable (the server's EOF, stray bytes) or that waited longer than
  `keepalive_expiry` is closed, never reused;
- per-request timeouts from `request.extensions["timeout"]`: `connect` for
  opening (TCP and TLS), `write` for sending, `read` for the head of the
  answer and again for its body;
- answers framed by Content-Length, chunked, or the end of the connection;
  1xx answers skipped; the whole answer read before it is returned;
- the same httpx exceptions for the same failures: `ConnectError` /
  `ConnectTimeout` (the request never left), `WriteError` / `WriteTimeout`,
  `RemoteProtocolError` / `ReadError` / `ReadTimeout` (the answer was lost).
  A connection that failed, or whose request was cancelled, is closed.

What it does not do: proxies, HTTP/2, client certificates, streaming.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass

import anyio
import httpx
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

from cuemsg.cueapi._http11 import (
    MAX_HEAD,
    MAX_LINE,
    chunk_size,
    encode_request,
    framing,
    is_final,
    parse_head,
    reusable,
)
from cuemsg.cueapi._transport import DEFAULT_KEEPALIVE_EXPIRY, DEFAULT_MAX_IDLE

__all__ = ["AsyncKeepAliveTransport"]

_Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class _Conn:
    stream: ByteStream
    reader: BufferedByteReceiveStream
    sock: socket.socket | None

    def stale(self) -> bool:
        """True if reading would not block: the server closed it, or sent what nobody asked."""
        if self.reader.buffer:
            return True
        sock = self.sock
        if sock is None or sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    async def close(self) -> None:
        await anyio.aclose_forcefully(self.stream)


@dataclass
class _Answer:
    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    content: bytes
    reusable: bool


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _read_chunked(reader: BufferedByteReceiveStream) -> bytes:
    parts: list[bytes] = []
    while size := chunk_size(await reader.receive_until(b"\r\n", MAX_LINE)):
        parts.append(await reader.receive_exactly(size))
        if await reader.receive_exactly(2) != b"\r\n":
            raise ValueError("a chunk does not end with CRLF")
    while await reader.receive_until(b"\r\n", MAX_LINE):  # trailers, then a blank line
        pass
    return b"".join(parts)


async def _read_to_eof(reader: BufferedByteReceiveStream) -> bytes:
    parts: list[bytes] = []  # receive() hands out what the buffer holds first
    while True:
        try:
            parts.append(await reader.receive())
        except anyio.EndOfStream:
            return b"".join(parts)


async def read_answer(reader: BufferedByteReceiveStream, method: str) -> _Answer:
    """Read one whole answer (1xx ones skipped); `reusable` if the connection may serve more."""
    while True:
        version, status, reason, headers = parse_head(
            await reader.receive_until(b"\r\n\r\n", MAX_HEAD)
        )
        if is_final(status):
            break
    keep = reusable(version, headers)
    kind, length = framing(method, status, headers)
    if kind == "none":
        content = b""
    elif kind == "chunked":
        content = await _read_chunked(reader)
    elif kind == "length":
        content = await reader.receive_exactly(length)
    else:  # the answer ends with the connection
        content, keep = await _read_to_eof(reader), False
    return _Answer(status, reason, version, headers, content, keep)


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
        self._idle: dict[_Origin, list[tuple[_Conn, float]]] = {}
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(idle={self.idle_count})"

    @property
    def idle_count(self) -> int:
        """Idle connections in the pool now, all origins together."""
        return sum(len(idle) for idle in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"request URL has an unsupported protocol {scheme + '://'!r}", request=request
            )
        if not url.host:
            raise httpx.UnsupportedProtocol("request URL is missing a host", request=request)
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        data = encode_request(request, await request.aread())
        conn = await self._checkout(origin, timeouts.get("connect"), request)
        try:
            answer = await self._exchange(conn, request, data, timeouts)
        except BaseException:  # a failure or a cancellation: the connection is in no known state
            await conn.close()
            raise
        if answer.reusable:
            await self._checkin(origin, conn)
        else:
            await conn.close()
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.content),
            extensions={"http_version": answer.version, "reason_phrase": answer.reason},
            request=request,
        )

    async def aclose(self) -> None:
        """Close every idle connection (connections in use close when their request ends)."""
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn, _ in conns]
        self._idle.clear()
        for conn in idle:
            await conn.close()

    # -- the pool -----------------------------------------------------------------------------

    async def _checkout(
        self, origin: _Origin, connect_timeout: float | None, request: httpx.Request
    ) -> _Conn:
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

    async def _checkin(self, origin: _Origin, conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if not self._closed and len(idle) < self._max_idle:
            idle.append((conn, time.monotonic()))
        else:
            await conn.close()

    async def _connect(
        self, origin: _Origin, timeout: float | None, request: httpx.Request
    ) -> _Conn:
        scheme, host, port = origin
        try:
            with anyio.fail_after(timeout):
                stream: ByteStream = await anyio.connect_tcp(host, port)
                sock = stream.extra(SocketAttribute.raw_socket, None)
                if scheme == "https":
                    try:
                        stream = await TLSStream.wrap(
                            stream, hostname=host, ssl_context=self._get_ssl_context()
                        )
                    except BaseException:
                        await anyio.aclose_forcefully(stream)
                        raise
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(_describe(exc), request=request) from exc
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            # refused, unreachable, DNS (gaierror), TLS (SSLError, or the peer hung up)
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        self.connections_opened += 1
        return _Conn(stream, BufferedByteReceiveStream(stream), sock)

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # The same trust as httpx's default transport (certifi, or SSL_CERT_FILE/DIR).
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    # -- one exchange -------------------------------------------------------------------------

    @staticmethod
    async def _exchange(
        conn: _Conn, request: httpx.Request, data: bytes, timeouts: dict[str, float | None]
    ) -> _Answer:
        """Send `data` on `conn` and read the whole answer."""
        try:
            with anyio.fail_after(timeouts.get("write")):
                await conn.stream.send(data)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(_describe(exc), request=request) from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.WriteError(_describe(exc), request=request) from exc
        try:
            with anyio.fail_after(timeouts.get("read")):
                return await read_answer(conn.reader, request.method)
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
