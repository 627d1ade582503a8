"""`KeepAliveTransport`: an httpx transport that opens connections with `http.client`.

`CueClient` sends with it by default. httpx stays the client's API and its
exceptions stay the error vocabulary (`_retry.py` reads them), but the
bytes skip httpcore + h11: `http.client` opens the connection (TCP, TLS),
the request leaves in one write and the answer is read with `_http11`
(without `http.client`'s header parsing, which goes through the `email`
package). See `docs/client.md`, "Client transport".

What it does:
- one pool of idle keep-alive connections per (scheme, host, port), last in
  first out, at most `max_idle` each, shared by threads under a lock (a
  connection is used by one request at a time);
- before reusing an idle connection it checks, as httpcore does, that the
  socket is not readable (a readable idle socket holds the server's EOF or
  stray bytes): such a connection, or one idle longer than
  `keepalive_expiry`, is closed and another taken or opened, so a
  connection the server closed while idle never eats a request;
- per-request timeouts from `request.extensions["timeout"]`: `connect` for
  opening (TCP and TLS), `write` for sending, `read` for each read of the
  answer;
- the whole answer is read before it is returned (no streaming);
- failures are raised as httpx exceptions, `from` the socket error:
  refused / unreachable / DNS / TLS during connect -> `ConnectError`,
  a timeout there -> `ConnectTimeout` (the request never left: safe to
  repeat); a failure while sending -> `WriteError` / `WriteTimeout`; a
  reset, an EOF or a malformed answer after the request went out ->
  `RemoteProtocolError` / `ReadError`, a timeout there -> `ReadTimeout`
  (the answer was lost: `_retry.py` repeats only calls marked safe). A
  connection that failed is closed, never pooled.

What it does not do: proxies, HTTP/2, client certificates, streaming.
For a proxy, pass `transport=httpx.HTTPTransport(proxy=...)` or your own
`http_client=` to `CueClient` (`CueClient` also keeps httpx's own transport
when `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` is set).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time

import httpx

from cuemsg.cueapi._http11 import (
    Head,
    IncompleteAnswer,
    SocketReader,
    encode_request,
    read_answer,
    whole_response,
)

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_MAX_IDLE",
    "DEFAULT_PORTS",
    "KeepAliveTransport",
    "Origin",
    "origin_of",
]

DEFAULT_MAX_IDLE = 20  # idle connections kept per (scheme, host, port)
DEFAULT_KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is reused for (httpx's default)

Origin = tuple[str, str, int]  # (scheme, host, port)
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: httpx.URL, request: httpx.Request | None = None) -> Origin:
    """(scheme, host, port) of `url`, the key of a connection pool.

    Raises:
        httpx.UnsupportedProtocol: not http or https, or no host.
    """
    scheme = url.scheme
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(
            f"request URL has an unsupported protocol {scheme + '://'!r}", request=request
        )
    if not url.host:
        raise httpx.UnsupportedProtocol("request URL is missing a host", request=request)
    return scheme, url.host, url.port or DEFAULT_PORTS[scheme]


def _readable(sock: socket.socket | None) -> bool:
    """True if a recv on `sock` would not block (EOF, stray bytes), or there is no socket."""
    if sock is None or sock.fileno() < 0:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class KeepAliveTransport(httpx.BaseTransport):
    """A thread-safe keep-alive HTTP/1.1 transport for `httpx.Client` on `http.client`.

    Args:
        max_idle: idle connections kept per (scheme, host, port); more are closed.
        keepalive_expiry: seconds an idle connection may wait to be reused
            (None: no limit; the readability check still applies).
        ssl_context: for https (default: httpx's, `httpx.create_ssl_context()`,
            made on the first https connection).

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
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(idle={self.idle_count})"

    @property
    def idle_count(self) -> int:
        """Idle connections in the pool now, all origins together."""
        with self._lock:
            return sum(len(idle) for idle in self._idle.values())

    # -- httpx.BaseTransport ----------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin = origin_of(request.url, request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        data = encode_request(request, request.read())  # a bad header fails before connecting
        head, content = self.exchange(origin, data, request.method, timeouts, request)
        return whole_response(request, head, content)

    def exchange(
        self,
        origin: Origin,
        data: bytes,
        method: str,
        timeouts: dict[str, float | None],
        request: httpx.Request | None = None,
    ) -> tuple[Head, bytes]:
        """Send `data`, a whole request's bytes, to `origin`; read the whole answer.

        What `handle_request` does once it has the bytes, and what `CueClient`
        calls directly for the requests it encodes itself (no `httpx.Request`
        then: `request` only goes into the exceptions, as httpx's own do).

        Returns:
            (head, body): the head as `_http11.parse_head` gives it.

        Raises:
            httpx.TransportError: the subclasses in the module's docstring.
        """
        conn = self._checkout(origin, timeouts.get("connect"), request)
        try:
            head, content, keep = self._exchange(conn, method, data, timeouts, request)
        except BaseException:
            conn.close()
            raise
        if keep:
            self._checkin(origin, conn)
        else:  # the answer said the connection closes, or ended with it
            conn.close()
        return head, content

    def close(self) -> None:
        """Close every idle connection (connections in use close when their request ends)."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn, _ in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    # -- the pool -----------------------------------------------------------------------------

    def _checkout(
        self, origin: Origin, connect_timeout: float | None, request: httpx.Request | None
    ) -> http.client.HTTPConnection:
        """A usable idle connection to `origin`, or a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    break
                conn, since = idle.pop()
            expiry = self._keepalive_expiry
            if (expiry is not None and time.monotonic() - since > expiry) or _readable(conn.sock):
                conn.close()  # expired, or the server closed it (or sent what it should not)
                continue
            return conn
        return self._connect(origin, connect_timeout, request)

    def _checkin(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self._max_idle:
                idle.append((conn, time.monotonic()))
                return
        conn.close()

    def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._get_ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(_describe(exc), request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            conn.close()
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        with self._lock:
            self.connections_opened += 1
        return conn

    def _get_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # The same trust as httpx's default transport (certifi, or SSL_CERT_FILE/DIR).
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    # -- one exchange -------------------------------------------------------------------------

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection,
        method: str,
        data: bytes,
        timeouts: dict[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[Head, bytes, bool]:
        """Send `data` (the request's bytes) on `conn`, read the whole answer: (head, body,
        connection reusable).

        `http.client` only opens the connection (TCP and TLS); the request
        goes in one write and the answer is read with `_http11` (its headers
        not parsed by the `email` package, as `http.client` would). Bytes after
        the answer leave the connection not reusable.
        """
        sock = conn.sock
        assert sock is not None
        try:
            sock.settimeout(timeouts.get("write"))
            sock.sendall(data)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(_describe(exc), request=request) from exc
        except OSError as exc:  # BrokenPipe, reset: some of the request may have left
            raise httpx.WriteError(_describe(exc), request=request) from exc

        try:
            sock.settimeout(timeouts.get("read"))
            head, content, keep = read_answer(SocketReader(sock.recv), method)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(_describe(exc), request=request) from exc
        except (IncompleteAnswer, ValueError) as exc:
            # closed before a whole answer, a bad status line, header, length or chunk
            raise httpx.RemoteProtocolError(_describe(exc), request=request) from exc
        except OSError as exc:  # reset by peer, and the like
            raise httpx.ReadError(_describe(exc), request=request) from exc

        return head, content, keep
